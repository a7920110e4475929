'''octoDNS against a running weir: octodns-sync and octodns-dump, the real CLIs.'''

import subprocess
import sys
from pathlib import Path

import dns.message
import dns.query
import dns.rdatatype
import yaml

BIN = Path(sys.executable).parent

# The managed names as weir's config has them (see conftest.CONFIG), as octoDNS records.
MANAGED = '''
app:
  type: A
  ttl: 30
  values: [192.0.2.10, 192.0.2.11, 192.0.2.20]
  octodns:
    healthcheck: {protocol: HTTP, port: 8080}
  dynamic:
    pools:
      default:
        values:
          - {value: 192.0.2.10, weight: %(w10)s}
          - {value: 192.0.2.11, weight: %(w11)s}
          - {value: 192.0.2.20, weight: %(w20)s}
    rules:
      - pool: default
geo:
  type: A
  ttl: 60
  value: 192.0.2.40
  dynamic:
    pools:
      eu:
        fallback: us
        values: [{value: 192.0.2.30}]
      us:
        values: [{value: 192.0.2.40}]
    rules:
      - pool: eu
        subnets: [198.51.100.0/24]
        geos: [EU-DE]
      - pool: us
'''

# The apex NS is the zone file's (read-only to octoDNS), so it is not here.
STATIC = '''
'':
  - type: MX
    values:
      - {preference: 10, exchange: mail.example.com.}
  - type: TXT
    values: ['v=spf1 mx -all', 'two words\\; and a semicolon']
  - type: CAA
    value: {flags: 0, tag: issue, value: letsencrypt.org}
ns1: {type: A, value: 192.0.2.53}
mail:
  - {type: A, value: 192.0.2.25}
  - {type: AAAA, value: '2001:db8::25'}
www: {type: CNAME, value: mail.example.com.}
_sip._tcp: {type: SRV, value: {priority: 10, weight: 5, port: 5060, target: mail.example.com.}}
ptr: {type: PTR, value: mail.example.com.}
sub: {type: NS, values: [ns1.example.net., ns2.example.net.]}
'''

WEIGHTS = {'w10': 3, 'w11': 6, 'w20': 1}


def write_config(weir, tmp_path, zone_yaml, strict=True):
    (tmp_path / 'zones').mkdir(exist_ok=True)
    (tmp_path / 'zones' / 'example.com.yaml').write_text(zone_yaml)
    config = tmp_path / 'config.yaml'
    config.write_text(
        f'''providers:
  config:
    class: octodns.provider.yaml.YamlProvider
    directory: {tmp_path / 'zones'}
    enforce_order: false
{weir.provider_yaml()}    strict_supports: {str(strict).lower()}
zones:
  example.com.:
    sources: [config]
    targets: [weir]
'''
    )
    return config


def sync(config, *args):
    return subprocess.run(
        [BIN / 'octodns-sync', '--config-file', config, *args], capture_output=True, text=True
    )


def query(weir, name, rdtype):
    q = dns.message.make_query(name, rdtype)
    r = dns.query.udp(q, '127.0.0.1', port=weir.dns_port, timeout=3)
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset if rrset.rdtype == dns.rdatatype.from_text(rdtype))


def test_1_sync_applies_and_converges(weir, tmp_path):
    config = write_config(weir, tmp_path, STATIC + MANAGED % WEIGHTS)
    plan = sync(config)
    assert plan.returncode == 0, plan.stderr
    assert 'Creates=' in plan.stderr, plan.stderr
    applied = sync(config, '--doit')
    assert applied.returncode == 0, applied.stderr

    assert query(weir, 'mail.example.com', 'A') == ['192.0.2.25']
    assert query(weir, 'mail.example.com', 'AAAA') == ['2001:db8::25']
    assert query(weir, 'example.com', 'MX') == ['10 mail.example.com.']
    assert query(weir, 'example.com', 'TXT') == ['"two words; and a semicolon"', '"v=spf1 mx -all"']
    assert query(weir, 'example.com', 'CAA') == ['0 issue "letsencrypt.org"']
    assert query(weir, '_sip._tcp.example.com', 'SRV') == ['10 5 5060 mail.example.com.']
    assert query(weir, 'www.example.com', 'CNAME') == ['mail.example.com.']
    # `old` was in weir's zone file and not in the desired zone: deleted by UPDATE.
    assert query(weir, 'old.example.com', 'A') == []
    assert weir.get('/v1/zones/example.com./updates')['rrsets']

    again = sync(config)
    assert again.returncode == 0, again.stderr
    assert 'No changes were planned' in again.stdout + again.stderr, again.stdout + again.stderr


def test_2_dump_reads_static_and_managed(weir, tmp_path):
    config = tmp_path / 'dump.yaml'
    config.write_text(f'providers:\n{weir.provider_yaml()}zones:\n  example.com.:\n    sources: [weir]\n    targets: []\n')
    out = tmp_path / 'out'
    run = subprocess.run(
        [BIN / 'octodns-dump', '--config-file', config, '--output-dir', out, 'example.com.', 'weir'],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    zone = yaml.safe_load((out / 'example.com.yaml').read_text())
    assert zone['mail'][0]['value'] == '192.0.2.25'
    app = zone['app']['dynamic']
    assert app['rules'] == [{'pool': 'default'}]
    assert {v['value']: v['weight'] for v in app['pools']['default']['values']} == {
        '192.0.2.10': 3, '192.0.2.11': 6, '192.0.2.20': 1,
    }
    assert zone['app']['octodns'] == {'healthcheck': {'protocol': 'HTTP', 'port': 8080}}
    geo = zone['geo']['dynamic']
    assert geo['rules'][0] == {'pool': 'eu', 'subnets': ['198.51.100.0/24'], 'geos': ['EU-DE']}
    assert geo['pools']['eu']['fallback'] == 'us'


def test_3_unsupported_is_reported(weir, tmp_path):
    new_dynamic = '''
api:
  type: A
  ttl: 60
  value: 192.0.2.70
  dynamic:
    pools:
      one: {values: [{value: 192.0.2.70}]}
    rules: [{pool: one}]
'''
    # strict (octoDNS's default): the plan fails and says why.
    config = write_config(weir, tmp_path, STATIC + MANAGED % WEIGHTS + new_dynamic)
    plan = sync(config)
    assert plan.returncode != 0
    assert 'api.example.com. A: dynamic record at a name weir has no [[pool]] or [[route]]' in plan.stderr

    # A new rule for an existing route, and a static address at a managed name.
    route_rule = (MANAGED % WEIGHTS).replace('geos: [EU-DE]', 'geos: [EU-DE, EU-FR]')
    config = write_config(weir, tmp_path, STATIC + route_rule)
    plan = sync(config)
    assert plan.returncode != 0
    assert "geo.example.com. A: rules differ from the route's (rules are config)" in plan.stderr

    # A static address at a managed name: its answers are the pool's.
    static_app = MANAGED % WEIGHTS
    static_app = 'app: {type: A, ttl: 30, value: 192.0.2.99}\n' + static_app[static_app.index('geo:'):]
    config = write_config(weir, tmp_path, STATIC + static_app)
    plan = sync(config)
    assert plan.returncode != 0
    assert 'app.example.com. A: a managed name answers from its pool' in plan.stderr

    # The managed names left out: deleting them would need weir's config.
    config = write_config(weir, tmp_path, STATIC)
    plan = sync(config)
    assert plan.returncode != 0
    assert 'app.example.com. A: not in the desired zone, but a managed name cannot be deleted' in plan.stderr

    # lenient: a warning, and the change is left out of the plan.
    config = write_config(weir, tmp_path, STATIC + route_rule, strict=False)
    plan = sync(config)
    assert plan.returncode == 0, plan.stderr
    assert 'rules differ' in plan.stderr and 'leaving it as weir serves it' in plan.stderr
    assert 'No changes were planned' in plan.stdout + plan.stderr

    # lenient, a new dynamic record: a warning, and its values planned as a static record.
    config = write_config(weir, tmp_path, STATIC + MANAGED % WEIGHTS + new_dynamic, strict=False)
    plan = sync(config)
    assert plan.returncode == 0, plan.stderr
    assert 'falling back to its values as a static record' in plan.stderr
    assert "Create <ARecord A 60, api.example.com., ['192.0.2.70']>" in plan.stdout + plan.stderr


def test_4_weight_change_reaches_the_pool(weir, tmp_path):
    config = write_config(weir, tmp_path, STATIC + MANAGED % {'w10': 1, 'w11': 1, 'w20': 2})
    applied = sync(config, '--doit')
    assert applied.returncode == 0, applied.stderr
    pool = weir.get('/v1/pools/app.example.com.')
    weights = {g['name']: g['weight']['effective'] for g in pool['groups']}
    endpoints = {e['address']: e['weight']['effective'] for g in pool['groups'] for e in g['endpoints']}
    assert weights == {'blue': 2, 'green': 2}
    assert endpoints == {'192.0.2.10': 1, '192.0.2.11': 1, '192.0.2.20': 2}
    assert pool['status']['ipv4']['shares'] == [['192.0.2.10', 0.25], ['192.0.2.11', 0.25], ['192.0.2.20', 0.5]]
    again = sync(config)
    assert 'No changes were planned' in again.stdout + again.stderr, again.stdout + again.stderr


def test_5_refused_update_says_why(weir, tmp_path):
    # A record below a delegation (`sub` is delegated in STATIC): weir refuses it and says so.
    below = 'x.sub: {type: A, value: 192.0.2.77}\n'
    config = write_config(weir, tmp_path, STATIC + MANAGED % WEIGHTS + below)
    applied = sync(config, '--doit')
    assert applied.returncode != 0
    assert 'UPDATE x.sub.example.com. A create: REFUSED: ' in applied.stderr, applied.stderr


def test_6_unsupported_type_is_reported(weir, tmp_path):
    config = write_config(weir, tmp_path, STATIC.replace("'':\n", "'':\n  - {type: ALIAS, value: mail.example.com.}\n", 1) + MANAGED % WEIGHTS)
    plan = sync(config)
    assert plan.returncode != 0
    assert 'ALIAS' in plan.stderr, plan.stderr


def test_7_route_pool_endpoints_added_and_drained(weir, tmp_path):
    two = (MANAGED % WEIGHTS).replace(
        'values: [{value: 192.0.2.30}]', 'values: [{value: 192.0.2.30, weight: 1}, {value: 192.0.2.31, weight: 3}]'
    )
    config = write_config(weir, tmp_path, STATIC + two)
    applied = sync(config, '--doit')
    assert applied.returncode == 0, applied.stderr
    pool = weir.get('/v1/pools/eu@geo.example.com.')
    assert {e['address']: e['weight']['effective'] for e in pool['groups'][0]['endpoints']} == {
        '192.0.2.30': 1, '192.0.2.31': 3,
    }
    assert 'No changes were planned' in sync(config).stderr

    # Left out of the pool: drained (weight 0), not deleted; a pool's single value has weight 1.
    one = (MANAGED % WEIGHTS).replace('values: [{value: 192.0.2.30}]', 'values: [{value: 192.0.2.31}]')
    config = write_config(weir, tmp_path, STATIC + one)
    applied = sync(config, '--doit')
    assert applied.returncode == 0, applied.stderr
    pool = weir.get('/v1/pools/eu@geo.example.com.')
    assert {e['address']: e['weight']['effective'] for e in pool['groups'][0]['endpoints']} == {
        '192.0.2.30': 0, '192.0.2.31': 1,
    }
    assert 'No changes were planned' in sync(config).stderr
