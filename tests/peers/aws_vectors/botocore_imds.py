"""Runs botocore's real IMDSv2 client (InstanceMetadataFetcher) against hybridboot's IMDS logic
through a pipe instead of a socket: every request botocore prepares is serialised to raw HTTP/1.1
bytes and written (4-byte big-endian length + bytes) to the helper process given on the command
line; its answer, raw HTTP bytes framed the same way on the helper's stderr (its stdout belongs to
the test harness), becomes botocore's response.

Usage: botocore_imds.py HELPER_ARGV_JSON
Prints JSON: the credentials dict botocore returns ({} when it got none) and the requests sent.
"""

import json
import struct
import subprocess
import sys
from urllib.parse import urlsplit

from botocore.awsrequest import AWSResponse
from botocore.utils import InstanceMetadataFetcher


class _Raw:
    def __init__(self, body):
        self._body = body

    def stream(self, **_):
        yield self._body


class PipeSession:
    def __init__(self, argv):
        self.proc = subprocess.Popen(
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self.sent = []

    def send(self, request):
        url = urlsplit(request.url)
        target = url.path + (("?" + url.query) if url.query else "")
        lines = [f"{request.method} {target} HTTP/1.1", f"Host: {url.netloc}"]
        for k, v in request.headers.items():
            lines.append(f"{k}: {v.decode() if isinstance(v, bytes) else v}")
        body = request.body or b""
        if isinstance(body, str):
            body = body.encode()
        if body:
            lines.append(f"Content-Length: {len(body)}")
        raw = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        self.sent.append(f"{request.method} {target}")
        self.proc.stdin.write(struct.pack(">I", len(raw)) + raw)
        self.proc.stdin.flush()
        frame = self.proc.stderr.read(4)
        if len(frame) != 4:
            raise RuntimeError("IMDS helper exited: " + self.proc.stderr.read().decode(errors="replace"))
        (n,) = struct.unpack(">I", frame)
        answer = self.proc.stderr.read(n)
        head, _, payload = answer.partition(b"\r\n\r\n")
        head_lines = head.decode().split("\r\n")
        status = int(head_lines[0].split(" ")[1])
        headers = dict(h.split(": ", 1) for h in head_lines[1:])
        return AWSResponse(request.url, status, headers, _Raw(payload))

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def main() -> None:
    argv = json.loads(sys.argv[1])
    fetcher = InstanceMetadataFetcher(timeout=1, num_attempts=1, base_url="http://127.0.0.1:9911/")
    session = PipeSession(argv)
    fetcher._session = session
    creds = fetcher.retrieve_iam_role_credentials()
    session.close()
    print(json.dumps({"credentials": creds, "sent": session.sent}))


if __name__ == "__main__":
    main()
