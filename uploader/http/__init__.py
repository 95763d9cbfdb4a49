"""The HTTP sink (aiohttp): batches POSTed to a KAMP-style ingest endpoint, confirmed per record."""

from uploader.http.settings import HttpConfigError, HttpSettings
from uploader.http.sink import HttpSink, HttpStats
from uploader.tls import TlsSettings

__all__ = ["HttpConfigError", "HttpSettings", "HttpSink", "HttpStats", "TlsSettings"]
