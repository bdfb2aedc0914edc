"""A local stand-in for the Hugging Face Hub: just enough HTTP for huggingface_hub's snapshot_download.

It serves one repository from a folder: repository info with the commit and file list, the file
tree, and file resolution (HEAD and GET, with the commit and ETag headers the client checks, and
byte ranges for resumed downloads). It can fail the way a real Hub does: an HTTP error on every
API call (401 gated, 404 missing, 500), or a connection dropped halfway through a file, once or
every time. Every request is recorded, so a test can see what the client fetched.
"""

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_SUFFIXES = (".safetensors", ".bin")
ERRORS = {401: ("GatedRepo", "Access to model {repo} is restricted. You must have access to it and be authenticated."),
          404: ("RepoNotFound", "Repository not found"), 500: (None, "Internal Error")}


@dataclass
class HubBehaviour:
    """What the stand-in does; a test may change it between runs."""

    status: int = 200  # answer every API call with this status (401, 404, 500) instead of the repository
    drop_in: str | None = None  # a file whose GET is cut off halfway ...
    drops_left: int = 0  # ... this many times (then served whole)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, path, Range header) of each request


def served_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def make_handler(repo: str, files: dict[str, bytes], behaviour: HubBehaviour) -> type[BaseHTTPRequestHandler]:
    api_info = re.compile(rf"/api/models/{re.escape(repo)}/revision/[^/]+")
    api_tree = re.compile(rf"/api/models/{re.escape(repo)}/tree/[^/?]+")
    resolve = re.compile(rf"/{re.escape(repo)}/resolve/[^/]+/(?P<path>.+)")

    def entry(path: str) -> dict:
        data = files[path]
        item = {"type": "file", "path": path, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
        if path.endswith(LFS_SUFFIXES):
            item["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
        return item

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:  # quiet: the test output is the client's
            pass

        def send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
            self.send_response(status)
            for name, value in ({"Content-Length": str(len(body))} | (headers or {})).items():
                self.send_header(name, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def send_json(self, content) -> None:
            self.send(200, json.dumps(content).encode(), {"Content-Type": "application/json"})

        def fail_if_told(self) -> bool:
            if behaviour.status == 200:
                return False
            code, message = ERRORS[behaviour.status]
            headers = {"X-Error-Message": message.format(repo=repo)} | ({"X-Error-Code": code} if code else {})
            self.send(behaviour.status, json.dumps({"error": message.format(repo=repo)}).encode(), headers)
            return True

        def serve_file(self, head: bool) -> None:
            path = resolve.fullmatch(self.path.split("?")[0])["path"]
            if path not in files:
                self.send(404, b"Entry not found", {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": COMMIT})
                return
            data, item = files[path], entry(path)
            headers = {"X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes", "ETag": f'"{item["oid"]}"'}
            if "lfs" in item:
                headers |= {"X-Linked-Etag": f'"{item["lfs"]["oid"]}"', "X-Linked-Size": str(len(data))}
            start = int(re.fullmatch(r"bytes=(\d+)-\d*", self.headers.get("Range", "bytes=0-"))[1])
            status = 206 if start else 200
            if start:
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            body = data[start:]
            if head:
                self.send(200, data, headers, head=True)
            elif path == behaviour.drop_in and behaviour.drops_left > 0:
                behaviour.drops_left -= 1
                self.send_response(status)
                for name, value in ({"Content-Length": str(len(body))} | headers).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)  # the connection drops halfway through the file
            else:
                self.send(status, body, headers)

        def route(self, head: bool) -> None:
            behaviour.requests.append((self.command, self.path, self.headers.get("Range", "")))
            bare = self.path.split("?")[0]
            if resolve.fullmatch(bare):
                if not self.fail_if_told():
                    self.serve_file(head)
            elif api_info.fullmatch(bare):
                if not self.fail_if_told():
                    self.send_json({"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "gated": False,
                                    "disabled": False, "siblings": [{"rfilename": p} for p in files]})
            elif api_tree.fullmatch(bare):
                if not self.fail_if_told():
                    self.send_json([entry(p) for p in files])
            else:
                self.send(404, b"not found", {"X-Error-Code": "RepoNotFound"})

        def do_GET(self) -> None:
            self.route(head=False)

        def do_HEAD(self) -> None:
            self.route(head=True)

    return Handler


class HubStandIn:
    """`with HubStandIn(repo, folder) as hub:` serves on 127.0.0.1:<free port> until the block ends;
    `hub.endpoint` is the HF_ENDPOINT to give the client, `hub.behaviour` what it does."""

    def __init__(self, repo: str, folder: Path, behaviour: HubBehaviour | None = None):
        self.behaviour = behaviour or HubBehaviour()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(repo, served_files(folder), self.behaviour))
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> "HubStandIn":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
