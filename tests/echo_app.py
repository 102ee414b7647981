"""A web app for the tests of web-app job types: it answers every request
with what it was given, as JSON: its command line, working folder and
environment variable ``ECHO_TOKEN``, and the request's path and headers.

Run by a job type's ``app`` (tests/integration/test_apps.py) as
``echo_app.py <port> <base_url> <workspace>``, on 127.0.0.1 only.
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Echo(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(
            {
                "argv": sys.argv[1:],
                "cwd": os.getcwd(),
                "token": os.environ.get("ECHO_TOKEN"),
                "path": self.path,
                "headers": {name: value for name, value in self.headers.items()},
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format, *args):
        pass


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(sys.argv[1])), Echo).serve_forever()
