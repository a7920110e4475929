'''Starts a real weir (WEIR_BIN, default `weir` on PATH) on loopback for the tests: a zone with
an [[zone.update]] grant for a tsig-keygen key, a plain pool and a route.'''

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

REPO = Path(__file__).resolve().parents[3]

ZONE = '''$ORIGIN example.com.
$TTL 3600
@       SOA ns1 hostmaster ( 2026120301 7200 3600 1209600 300 )
        NS  ns1
ns1     A   192.0.2.53
old     A   192.0.2.99
'''

CONFIG = '''
[dns]
listen = ["127.0.0.1:{dns_port}"]
udp_workers = 1
[admin]
listen = "127.0.0.1:{admin_port}"
[store]
path = "weir-state"
[tsig]
key_files = ["octo-key.conf"]
[geo]
database = "geo.mmdb"

[[zone]]
origin = "example.com."
file = "example.com.zone"
allow_transfer = ["key:octo-key"]
[[zone.update]]
key = "octo-key"

[[pool]]
name = "app.example.com."
ttl = 30
[pool.check]
kind = "http"
port = 8080
initial = "up"
[[pool.group]]
name = "blue"
weight = 90
endpoints = [{{ address = "192.0.2.10" }}, {{ address = "192.0.2.11", weight = 2 }}]
[[pool.group]]
name = "green"
weight = 10
endpoints = [{{ address = "192.0.2.20" }}]

[[route]]
name = "geo.example.com."
[[route.rule]]
pool = "eu"
subnets = ["198.51.100.0/24"]
countries = ["DE"]
[[route.rule]]
pool = "us"
[[route.pool]]
name = "eu"
ttl = 60
on_all_down = "fallback:us"
[[route.pool.group]]
name = "main"
endpoints = [{{ address = "192.0.2.30" }}]
[[route.pool]]
name = "us"
ttl = 60
[[route.pool.group]]
name = "main"
endpoints = [{{ address = "192.0.2.40" }}]
'''


def free_port():
    # A port free for both TCP and UDP on loopback.
    while True:
        with socket.socket() as tcp:
            tcp.bind(('127.0.0.1', 0))
            port = tcp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind(('127.0.0.1', port))
                except OSError:
                    continue
            return port


class Weir:
    def __init__(self, root, dns_port, admin_port, key_name, key_secret, pid):
        self.root = root
        self.dns_port = dns_port
        self.admin_port = admin_port
        self.admin_url = f'http://127.0.0.1:{admin_port}'
        self.key_name = key_name
        self.key_secret = key_secret
        self.pid = pid

    def get(self, path):
        resp = requests.get(f'{self.admin_url}{path}', timeout=5)
        resp.raise_for_status()
        return resp.json()

    def provider_yaml(self):
        return f'''  weir:
    class: octodns_weir.WeirProvider
    dns_server: 127.0.0.1
    dns_port: {self.dns_port}
    admin_url: {self.admin_url}
    key_name: {self.key_name}
    key_secret: env/WEIR_TSIG_SECRET
'''


@pytest.fixture(scope='session')
def weir(tmp_path_factory):
    root = tmp_path_factory.mktemp('weir')
    binary = os.environ.get('WEIR_BIN') or shutil.which('weir')
    assert binary, 'set WEIR_BIN or put weir on PATH'
    key = subprocess.run(
        ['tsig-keygen', '-a', 'hmac-sha256', 'octo-key'], check=True, capture_output=True, text=True
    ).stdout
    (root / 'octo-key.conf').write_text(key)
    (root / 'octo-key.conf').chmod(0o600)
    secret = key.split('secret "', 1)[1].split('"', 1)[0]
    subprocess.run(
        [sys.executable, REPO / 'docs/examples/routing/make-mmdb.py', 'geo', root / 'geo.mmdb'],
        check=True, capture_output=True,
    )
    (root / 'example.com.zone').write_text(ZONE)
    dns_port, admin_port = free_port(), free_port()
    (root / 'weir.toml').write_text(CONFIG.format(dns_port=dns_port, admin_port=admin_port))
    log = open(root / 'weir.log', 'w')
    proc = subprocess.Popen([binary, 'serve', '--config', root / 'weir.toml'], stderr=log, stdout=log, cwd=root)
    try:
        deadline = time.time() + 20
        while True:
            assert proc.poll() is None, (root / 'weir.log').read_text()
            try:
                if requests.get(f'http://127.0.0.1:{admin_port}/readyz', timeout=1).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.time() < deadline, 'weir did not get ready'
            time.sleep(0.2)
        os.environ['WEIR_TSIG_SECRET'] = secret
        yield Weir(root, dns_port, admin_port, 'octo-key', secret, proc.pid)
    finally:
        os.kill(proc.pid, 15)
        proc.wait(10)
        log.close()
