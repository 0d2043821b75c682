"""A real S3-compatible HTTP server on 127.0.0.1 for tests: moto's standalone server, in a
process of its own (stopped by its process group id), spoken to by the real clients (pyarrow's
S3 filesystem, as Ray and qlora-sweep use it, and boto3 to make the bucket)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from .conftest import free_port, stop_group


@contextlib.contextmanager
def s3_server(bucket: str):
    """Yields the environment variables that point S3 clients at the server, with ``bucket``
    made; the server's data lives in its memory and goes with it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1",
                             "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "test-key",
           "AWS_SECRET_ACCESS_KEY": "test-secret", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "moto_server exited"
            try:
                urllib.request.urlopen(url, timeout=2).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto_server never answered"
                time.sleep(0.2)
        import boto3

        boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                     aws_access_key_id="test-key",
                     aws_secret_access_key="test-secret").create_bucket(Bucket=bucket)
        yield env
    finally:
        stop_group(proc, grace=10)


def listing(env: dict, uri: str) -> dict[str, int]:
    """``{path relative to uri: size}`` of every file under ``uri``, read with pyarrow."""
    from pyarrow import fs

    s3 = fs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], region="us-east-1",
                         access_key=env["AWS_ACCESS_KEY_ID"],
                         secret_key=env["AWS_SECRET_ACCESS_KEY"])
    root = uri.removeprefix("s3://").rstrip("/")
    infos = s3.get_file_info(fs.FileSelector(root, recursive=True, allow_not_found=True))
    return {i.path[len(root) + 1:]: i.size for i in infos if i.type == fs.FileType.File}
