'''octoDNS provider for weir.

Static records are read from weir's admin API (``GET /v1/zones/{zone}/records``) and written
as RFC 2136 UPDATE messages signed with TSIG, one per octoDNS change. Managed names (weir's
``[[pool]]`` and ``[[route]]``) are read as dynamic A/AAAA records; of those, only what weir's
admin API can change (endpoint and group weights, endpoints of a one-group pool) is applied.
Everything else about a managed name is weir config and is reported as unsupported.
'''

import logging
import os
from fractions import Fraction
from ipaddress import ip_address
from math import gcd, lcm
from urllib.parse import quote

import dns.edns
import dns.query
import dns.rcode
import dns.tsig
import dns.tsigkeyring
import dns.update
import requests
from octodns.provider import ProviderException
from octodns.provider.base import BaseProvider
from octodns.record import Delete, Record
from octodns.record.geo import GeoCodes
from octodns.record.rr import Rrset

__version__ = '0.1.0'

# The octoDNS pool id of a plain [[pool]] (a route's pools keep their labels).
PLAIN_POOL = 'default'
PROTOCOLS = {'http': 'HTTP', 'https': 'HTTPS', 'tcp': 'TCP'}


class WeirException(ProviderException):
    pass


class WeirProvider(BaseProvider):
    SUPPORTS_GEO = False
    SUPPORTS_DYNAMIC = True
    SUPPORTS_DYNAMIC_SUBNETS = True
    SUPPORTS_POOL_VALUE_STATUS = False
    SUPPORTS_MULTIVALUE_PTR = True
    # The apex NS is read (octoDNS ignores it on targets that do not manage it); weir refuses
    # deleting the last apex NS, so it is left to the zone file.
    SUPPORTS_ROOT_NS = False
    # The types whose records GET /v1/zones/{zone}/records presents in zone-file form. weir
    # presents DNAME, DS, LOC, SPF and URI rdata as base64, and SVCB/HTTPS parameters joined by
    # ", ", so those are left out until it presents them as a zone file would.
    SUPPORTS = {
        'A', 'AAAA', 'CAA', 'CNAME', 'MX', 'NAPTR', 'NS', 'OPENPGPKEY', 'PTR', 'SRV', 'SSHFP',
        'TLSA', 'TXT',
    }

    def __init__(
        self,
        id,
        dns_server='127.0.0.1',
        dns_port=53,
        admin_url='http://127.0.0.1:8053',
        admin_token=None,
        key_name=None,
        key_secret=None,
        key_algorithm='hmac-sha256',
        timeout=10,
        *args,
        **kwargs,
    ):
        self.log = logging.getLogger(f'WeirProvider[{id}]')
        super().__init__(id, *args, **kwargs)
        self.dns_server = dns_server
        self.dns_port = int(dns_port)
        self.admin_url = admin_url.rstrip('/')
        self.timeout = timeout
        token = admin_token or os.environ.get('WEIR_ADMIN_TOKEN')
        self.session = requests.Session()
        if token:
            self.session.headers['Authorization'] = f'Bearer {token}'
        key_secret = key_secret or os.environ.get('WEIR_TSIG_SECRET')
        self.keyring = None
        if key_name and key_secret:
            self.keyring = dns.tsigkeyring.from_text({key_name: (key_algorithm, key_secret)})
        self.key_name = key_name
        self._managed_cache = {}
        # (managed name, octoDNS pool id) -> weir's pool id (`name` or `label@name`).
        self._pool_ids = {}

    # ---- admin API ----

    def _get(self, path):
        resp = self.session.get(f'{self.admin_url}{path}', timeout=self.timeout)
        if resp.status_code == 404:
            return None
        if not resp.ok:
            raise WeirException(f'GET {path}: {resp.status_code} {resp.text.strip()}')
        return resp.json()

    def _write(self, method, path, body):
        resp = self.session.request(
            method, f'{self.admin_url}{path}', json=body, timeout=self.timeout
        )
        if not resp.ok:
            raise WeirException(f'{method} {path}: {resp.status_code} {resp.text.strip()}')

    # ---- reading ----

    def populate(self, zone, target=False, lenient=False):
        self.log.debug('populate: zone=%s, target=%s', zone.name, target)
        data = self._get(f'/v1/zones/{quote(zone.name)}/records')
        if data is None:
            return False
        before = len(zone.records)
        for rrset in data['rrsets']:
            _type = rrset['type']
            if _type == 'SOA':
                continue
            if _type not in self.SUPPORTS:
                self.log.warning('populate: skipping %s %s: type not supported', rrset['owner'], _type)
                continue
            # "owner ttl IN TYPE rdata": the rdata is everything after the fourth field.
            rdatas = [line.split(None, 4)[4] for line in rrset['records']]
            try:
                record = Record.from_rrset(
                    zone, Rrset(rrset['owner'], _type, rrset['ttl'], rdatas), lenient=lenient, source=self
                )
            except Exception as e:
                self.log.warning('populate: skipping %s %s: %s', rrset['owner'], _type, e)
                continue
            zone.add_record(record, lenient=lenient)
        for record in self._managed(zone).values():
            zone.add_record(record, lenient=lenient)
        self.log.info('populate: found %s records', len(zone.records) - before)
        return True

    def _managed(self, zone):
        '''The dynamic records of the zone's managed names, by (fqdn, type).'''
        if zone.name not in self._managed_cache:
            self._managed_cache[zone.name] = self._read_managed(zone)
        return self._managed_cache[zone.name]

    def _in_zone(self, name, zone):
        return name == zone.name or name.endswith(f'.{zone.name}')

    def _read_managed(self, zone):
        records = {}
        pools = {p['name']: self._get(f'/v1/pools/{quote(p["name"])}') for p in self._get('/v1/pools')['pools']}
        for name, pool in pools.items():
            if '@' in name or not self._in_zone(name, zone):
                continue
            rules = [{'pool': PLAIN_POOL}]
            self._pool_ids[(name, PLAIN_POOL)] = name
            self._add_dynamic(records, zone, name, {PLAIN_POOL: pool}, rules)
        for route in self._get('/v1/routes')['routes']:
            name = route['name']
            if not self._in_zone(name, zone):
                continue
            if any(rule['asns'] for rule in route['rules']):
                self.log.warning('populate: skipping route %s: octoDNS rules have no AS numbers', name)
                continue
            # weir names a route's pools `label@name`; octoDNS's pool ids are the labels.
            route_pools = {p['pool'].split('@', 1)[0]: pools[p['pool']] for p in route['pools']}
            for pid in route_pools:
                self._pool_ids[(name, pid)] = f'{pid}@{name}'
            rules = [self._rule(r['pool'].split('@', 1)[0], r) for r in route['rules']]
            self._add_dynamic(records, zone, name, route_pools, rules)
        return records

    def _rule(self, pool, rule):
        out = {'pool': pool}
        if rule['subnets']:
            out['subnets'] = rule['subnets']
        geos = list(rule['continents'])
        geos += [GeoCodes.country_to_code(c) for c in rule['countries']]
        for sub in rule['subdivisions']:
            country, _, province = sub.partition('-')
            geos.append(f'{GeoCodes.country_to_code(country)}-{province}')
        if geos:
            out['geos'] = sorted(geos)
        return out

    def _add_dynamic(self, records, zone, name, pools, rules):
        '''Adds the A and AAAA records of one managed name; `pools` maps octoDNS pool ids to
        weir's GET /v1/pools/{pool} bodies.'''
        for _type, version in (('A', 4), ('AAAA', 6)):
            values = {pid: pool_values(p, version) for pid, p in pools.items()}
            if not any(values.values()):
                continue
            if not all(values.values()):
                self.log.warning(
                    'populate: skipping %s %s: not every pool has IPv%s endpoints', name, _type, version
                )
                continue
            dyn_pools = {}
            for pid, pool in pools.items():
                dyn_pools[pid] = {'values': [{'value': v, 'weight': w} for v, w in values[pid]]}
                fallback = pool['on_all_down']
                if fallback.startswith('fallback:'):
                    dyn_pools[pid]['fallback'] = fallback[len('fallback:'):].split('@', 1)[0]
            catch_all = rules[-1]['pool']
            ttls = {p['ttl'] for p in pools.values()}
            if len(ttls) > 1:
                self.log.warning('populate: %s: pools have TTLs %s, using the catch-all pool\'s', name, sorted(ttls))
            data = {
                'type': _type,
                'ttl': pools[catch_all]['ttl'],
                'values': sorted(v for v, _ in values[catch_all]),
                'dynamic': {'pools': dyn_pools, 'rules': rules},
            }
            check = healthcheck(pools.values())
            if check:
                data['octodns'] = {'healthcheck': check}
            record = Record.new(zone, zone.hostname_from_fqdn(name), data, source=self, lenient=True)
            records[(record.fqdn, _type)] = record

    # ---- planning ----

    def _process_desired_zone(self, desired):
        managed = self._managed(desired)
        managed_names = {fqdn for fqdn, _ in managed}
        for record in list(desired.records):
            if record._type not in ('A', 'AAAA', 'CNAME'):
                continue
            existing = managed.get((record.fqdn, record._type))
            if record.fqdn in managed_names:
                reason = self._unsupported_managed(record, existing)
                if reason:
                    msg = f'{record.fqdn} {record._type}: {reason}'
                    if existing:
                        self.supports_warn_or_except(msg, 'leaving it as weir serves it')
                        desired.add_record(existing, replace=True)
                    else:
                        self.supports_warn_or_except(msg, 'ignoring it')
                        desired.remove_record(record)
                elif existing:
                    desired.add_record(reduced(record), replace=True)
            elif getattr(record, 'dynamic', None):
                self.supports_warn_or_except(
                    f'{record.fqdn} {record._type}: dynamic record at a name weir has no '
                    '[[pool]] or [[route]] for (pools, routes and checks are weir config)',
                    'falling back to its values as a static record',
                )
                record = record.copy()
                record.dynamic = None
                desired.add_record(record, replace=True)
        wanted = {(r.fqdn, r._type) for r in desired.records}
        for key, existing in managed.items():
            if key not in wanted:
                self.supports_warn_or_except(
                    f'{existing.fqdn} {existing._type}: not in the desired zone, but a managed name '
                    'cannot be deleted through weir\'s API (its pool or route is config)',
                    'leaving it as weir serves it',
                )
                desired.add_record(existing)
        return super()._process_desired_zone(desired)

    def _unsupported_managed(self, record, existing):
        '''Why weir's API cannot make `existing` (a managed name's record) into `record`, or
        None when it can (weights and endpoints only).'''
        if record._type == 'CNAME':
            return 'a managed name answers A and AAAA from its pool: no CNAME beside it'
        if existing is None:
            return f'a managed name without IPv{4 if record._type == "A" else 6} endpoints (weir config)'
        if not getattr(record, 'dynamic', None):
            return 'a managed name answers from its pool: only a dynamic record fits it'
        if record.ttl != existing.ttl:
            return f'TTL {record.ttl}: the TTL is the pool\'s config ({existing.ttl})'
        want, have = record.dynamic, existing.dynamic
        if set(want.pools) != set(have.pools):
            return f'pools {sorted(want.pools)}: weir has {sorted(have.pools)} (new pools are config)'
        if [r.data for r in want.rules] != [r.data for r in have.rules]:
            return 'rules differ from the route\'s (rules are config)'
        for pid, pool in want.pools.items():
            if pool.data.get('fallback') != have.pools[pid].data.get('fallback'):
                return f'pool {pid}: fallback differs (on_all_down is config)'
        if record.octodns.get('healthcheck') != existing.octodns.get('healthcheck'):
            return 'healthcheck differs (checks are config)'
        catch_all = want.rules[-1].data['pool']
        derived = sorted(v['value'] for v in want.pools[catch_all].data['values'])
        if sorted(record.values) != derived:
            return f'values must be the endpoints of the catch-all pool {catch_all} ({derived})'
        for pid, pool in want.pools.items():
            detail = self._get(f'/v1/pools/{quote(self._pool_ids[(record.fqdn, pid)])}')
            known = {e['address'] for g in detail['groups'] for e in g['endpoints']}
            new = [v['value'] for v in pool.data['values'] if v['value'] not in known]
            if new and len(detail['groups']) != 1:
                return f'pool {pid}: new endpoints {new} in a pool of several groups (which group?)'
            mixed = {ip_address(a).version for a in known} == {4, 6}
            if mixed and len(detail['groups']) > 1 and pool.data != have.pools[pid].data:
                return f'pool {pid}: its group weights are shared by A and AAAA; change them with weir ctl'
        return None

    # ---- applying ----

    def _apply(self, plan):
        desired = plan.desired
        managed = self._managed(desired)
        for change in plan.changes:
            record = change.new or change.existing
            if (record.fqdn, record._type) in managed:
                self._apply_weights(change.new)
            else:
                self._send_update(desired.name, change)
        self._managed_cache.pop(desired.name, None)

    def _send_update(self, zone_name, change):
        update = dns.update.UpdateMessage(zone_name, keyring=self.keyring)
        update.use_edns(0)
        record = change.new or change.existing
        if isinstance(change, Delete):
            update.delete(record.fqdn, record._type)
        else:
            rrset = record.to_rrset()
            update.replace(rrset.name, rrset.ttl, rrset._type, *rrset.rdatas)
        what = f'UPDATE {record.fqdn} {record._type} {type(change).__name__.lower()}'
        if self.keyring is None:
            raise WeirException(f'{what}: key_name and key_secret are needed to send UPDATEs')
        self.log.info(what)
        try:
            response = dns.query.tcp(update, self.dns_server, port=self.dns_port, timeout=self.timeout)
        except dns.tsig.PeerError as e:
            raise WeirException(f'{what}: NOTAUTH ({e.__class__.__name__}: {e})') from e
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            why = '; '.join(e.text or dns.edns.EDECode.to_text(e.code) for e in response.extended_errors())
            raise WeirException(f'{what}: {dns.rcode.to_text(rcode)}' + (f': {why}' if why else ''))

    def _apply_weights(self, record):
        """Sets the weights of the pools of a managed name to the record's (checked by
        _unsupported_managed); an endpoint left out gets weight 0 (drained). Raises come
        first, so the pool never passes through a zero total weight."""
        version = 4 if record._type == 'A' else 6
        for pid, pool in record.dynamic.pools.items():
            pool_id = quote(self._pool_ids[(record.fqdn, pid)])
            groups = self._get(f'/v1/pools/{pool_id}')['groups']
            want = {v['value']: v['weight'] for v in pool.data['values']}
            writes = []  # (new weight, old weight, method, path)
            for group in groups:
                mine = [e for e in group['endpoints'] if ip_address(e['address']).version == version]
                for e in mine:
                    path = f'/v1/pools/{pool_id}/endpoints/{quote(e["address"])}/weight'
                    writes.append((want.get(e['address'], 0), e['weight']['effective'], 'PUT', path))
                if len(groups) > 1 and mine:
                    total = sum(want.get(e['address'], 0) for e in mine)
                    path = f'/v1/pools/{pool_id}/groups/{quote(group["name"])}/weight'
                    writes.append((total, group['weight']['effective'], 'PUT', path))
            known = {e['address'] for g in groups for e in g['endpoints']}
            for address in want.keys() - known:
                path = f'/v1/pools/{pool_id}/groups/{quote(groups[0]["name"])}/endpoints'
                writes.append((want[address], 0, 'POST', path, address))
            for new, old, method, path, *address in sorted(writes, key=lambda w: w[0] <= w[1]):
                if new == old:
                    continue
                body = {'weight': new, 'reason': 'octoDNS'}
                if address:
                    body['address'] = address[0]
                self._write(method, path, body)


def pool_values(pool, version):
    '''[(address, weight)] of a weir pool's endpoints of one IP version: each endpoint's share
    of the pool (group weight over the groups' total, times endpoint weight over its group's),
    in lowest integer terms; endpoints and groups of weight 0 are left out.'''
    groups = []
    for g in pool['groups']:
        eps = [(e['address'], e['weight']['effective']) for e in g['endpoints']
               if ip_address(e['address']).version == version and e['weight']['effective'] > 0]
        if g['weight']['effective'] > 0 and eps:
            groups.append((g['weight']['effective'], eps))
    total = sum(gw for gw, _ in groups)
    shares = [(a, Fraction(gw, total) * Fraction(w, sum(x for _, x in eps)))
              for gw, eps in groups for a, w in eps]
    if not shares:
        return []
    if len(shares) == 1:
        return [(shares[0][0], 1)]
    scale = lcm(*(s.denominator for _, s in shares))
    ints = [(a, int(s * scale)) for a, s in shares]
    common = gcd(*(w for _, w in ints))
    ints = [(a, w // common) for a, w in ints]
    if max(w for _, w in ints) > 100:
        # octoDNS weights are 1..100: round to percent (lossy, so weight changes would drift).
        ints = [(a, max(1, round(float(s) * 100))) for a, s in shares]
    return sorted(ints)


def healthcheck(pools):
    '''octoDNS's healthcheck {protocol, port} when every probed endpoint has the same check.'''
    checks = {(e['probe']['kind'], e['probe']['target'].rsplit(':', 1)[1])
              for p in pools for g in p['groups'] for e in g['endpoints'] if e['probe']}
    if len(checks) != 1:
        return None
    kind, port = checks.pop()
    return {'protocol': PROTOCOLS[kind], 'port': int(port)}


def reduced(record):
    '''A copy of a dynamic record with each pool's weights in lowest terms, as weir reads them.'''
    data = record.data
    for pool in data['dynamic']['pools'].values():
        values = pool['values']
        if len(values) == 1:
            values[0]['weight'] = 1
            continue
        common = gcd(*(v.get('weight', 1) for v in values))
        for v in values:
            v['weight'] = v.get('weight', 1) // common
    data['type'] = record._type
    return Record.new(record.zone, record.name, data, source=record.source, lenient=True)
