"""Serves acme2certifier's WSGI app over TLS on loopback for certfleet's tests.

Usage: serve.py PORT CERT KEY DNS_PORT HTTP01_PORT (ACME_SRV_CONFIGFILE set by the caller).

acme2certifier validates with its own resolver on port 53 and fetches http-01 from port 80;
a test server runs on free loopback ports, so both ports are redirected here (the only
changes to the server's behaviour; documented in docs/interop.md).
"""
import ssl
import sys
import threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

PORT, CERT, KEY, DNS_PORT, HTTP01_PORT = sys.argv[1:6]

import dns.resolver  # noqa: E402

_reset = dns.resolver.BaseResolver.reset


def _reset_with_port(self):
    _reset(self)
    self.port = int(DNS_PORT)


dns.resolver.BaseResolver.reset = _reset_with_port

from acme2certifier.acme_srv.helpers import network  # noqa: E402

_url_host = network._http_url_host


def _url_host_with_port(ip):
    return f"{_url_host(ip)}:{HTTP01_PORT}"


network._http_url_host = _url_host_with_port

from acme2certifier.share.acme2certifier_wsgi import application  # noqa: E402


def app(environ, start_response):
    environ["HTTPS"] = "on"
    environ["wsgi.url_scheme"] = "https"
    return application(environ, start_response)


class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


srv = make_server("127.0.0.1", int(PORT), app, server_class=Server, handler_class=Quiet)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(CERT, KEY)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
print(f"listening on 127.0.0.1:{PORT}", flush=True)
srv.serve_forever()
