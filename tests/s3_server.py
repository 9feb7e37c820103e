"""A real S3-compatible server on 127.0.0.1 (moto's standalone server, in a thread) and the
URIs that reach it.

pyarrow and boto3 talk to it over HTTP as they would to any S3 endpoint; the credentials
are fake, taken from the environment as real ones are (``fake_credentials``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pytest

FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud's metadata service
}


def fake_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment a real S3 client reads its credentials from, with fake ones, and no
    profile or endpoint of the user's."""
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    for name, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(name, value)


@dataclass(frozen=True)
class S3Server:
    """Where the server listens, and the bucket of this test; ``uri(key)`` is an ``s3://``
    URI that reaches it."""

    port: int
    bucket: str = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def options(self) -> str:
        """pyarrow's S3 options for this server, as a URI query."""
        return f"endpoint_override=127.0.0.1:{self.port}&scheme=http"

    def uri(self, key: str = "", bucket: str | None = None) -> str:
        return f"s3://{bucket or self.bucket}/{key}?{self.options}"

    def client(self):
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def upload(self, folder: Path, prefix: str) -> str:
        """Every file under ``folder`` (hidden ones too) as an object under ``prefix/``; the
        URI of that prefix, as a folder."""
        client = self.client()
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                key = f"{prefix}/{file.relative_to(folder).as_posix()}"
                client.put_object(Bucket=self.bucket, Key=key, Body=file.read_bytes())
        return self.uri(f"{prefix}/")

    def put(self, key: str, body: bytes = b"") -> None:
        self.client().put_object(Bucket=self.bucket, Key=key, Body=body)

    def in_bucket(self, bucket: str) -> S3Server:
        """This server with ``bucket``, made."""
        self.client().create_bucket(Bucket=bucket)
        return S3Server(self.port, bucket)


def start_server():
    """moto's server on a free port of 127.0.0.1 only; the running server object."""
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    return server
