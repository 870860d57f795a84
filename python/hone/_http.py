"""A small JSON-over-HTTP client for hone's native API (standard library only)."""

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request

DEFAULT_SERVER = "http://127.0.0.1:8080"


class HoneError(Exception):
    """An error answered by the hone server: status is the HTTP status, code
    the server's error code (invalid_argument, not_found, ...)."""

    def __init__(self, status, code, message):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def __str__(self):
        return "hone: %s (HTTP %d, %s)" % (self.message, self.status, self.code)


class Connection:
    """Where and how to reach the server.

    server defaults to $HONE_SERVER, else http://127.0.0.1:8080; token to
    $HONE_TOKEN (a server beyond loopback always requires one). ca_file (or
    $HONE_CA_FILE) names a PEM bundle for a server with its own certificate.
    """

    def __init__(self, server=None, token=None, ca_file=None, timeout=60.0):
        self.server = (server or os.environ.get("HONE_SERVER") or DEFAULT_SERVER).rstrip("/")
        if "://" not in self.server:
            raise ValueError("server %r: want a URL such as http://127.0.0.1:8080" % self.server)
        self.token = token if token is not None else os.environ.get("HONE_TOKEN", "")
        ca_file = ca_file or os.environ.get("HONE_CA_FILE")
        self._ssl = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.timeout = timeout

    def request(self, method, path, query=None, body=None):
        url = self.server + path
        if query:
            pairs = []
            for k, v in query.items():
                if v is None:
                    continue
                for one in v if isinstance(v, (list, tuple)) else [v]:
                    pairs.append((k, str(one)))
            if pairs:
                url += "?" + urllib.parse.urlencode(pairs)
        data = None
        headers = {"Accept": "application/json", "User-Agent": "hone-python"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        req = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._ssl) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            code, message = "http_%d" % e.code, raw.decode("utf-8", "replace").strip() or e.reason
            try:
                err = json.loads(raw)
                code, message = err.get("code", code), err.get("error", message)
            except ValueError:
                pass
            raise HoneError(e.code, code, "%s %s: %s" % (method, path, message)) from None
        except urllib.error.URLError as e:
            raise ConnectionError("hone: cannot reach %s (%s); set HONE_SERVER or call configure(server=...)"
                                  % (self.server, e.reason)) from None
        if not raw:
            return None
        return json.loads(raw)
