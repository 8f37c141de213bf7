"""Where files live: local paths, or any fsspec URL (s3://, gs://, az://, http(s)://, memory://, hf://, ...).

The one module that knows about URLs. Everything that reads or writes shards, their index and
build.json, or source photos goes through these functions with whatever the user typed, so a local
folder and `s3://bucket/shards/` behave the same:

- `is_url(path)`: True for a URL of a protocol fsspec knows; False for local paths, `file://` URLs
  (read as local paths) and webdataset's `pipe:` commands.
- `join`, `exists`, `read_bytes`, `write_bytes` (atomic: a local file is written beside its place and
  renamed, an object is one put, which appears whole), `remove`, `listdir` (sorted full URLs),
  `open_read` (a streaming binary file) and `open_write` (the object appears only when closed, and
  not at all when the `with` block fails).

Errors a user can fix come out as one `StorageError` line naming the URL and what to do: the fsspec
implementation is not installed, the bucket does not exist, access is denied, the endpoint cannot be
reached, the object is missing. Credentials come from where botocore (s3fs), gcsfs or adlfs look for
them (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE and ~/.aws, AWS_ENDPOINT_URL for an
S3-compatible server, which botocore reads itself); nothing here prints or logs them, and a URL's
`user:password@` part is masked in messages.

fsspec is imported on first use of a URL: local paths never load it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from fnmatch import fnmatchcase
from typing import IO, Any

from .errors import StorageError, printable

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)(://|::)")
#: Protocols read as local paths.
_LOCAL = ("file", "local")
#: The package each protocol's fsspec implementation needs, for the "not installed" message.
_PACKAGES = {
    "s3": "s3fs: pip install 'sr-degrade[s3]'",
    "s3a": "s3fs: pip install 'sr-degrade[s3]'",
    "gs": "gcsfs: pip install gcsfs",
    "gcs": "gcsfs: pip install gcsfs",
    "az": "adlfs: pip install adlfs",
    "abfs": "adlfs: pip install adlfs",
    "abfss": "adlfs: pip install adlfs",
    "adl": "adlfs: pip install adlfs",
    "http": "aiohttp: pip install aiohttp",
    "https": "aiohttp: pip install aiohttp",
    "hf": "huggingface_hub: pip install huggingface_hub",
    "sftp": "paramiko: pip install paramiko",
    "ssh": "paramiko: pip install paramiko",
}
#: Protocols whose URLs name a bucket (container) first: a missing one gets its own message.
_BUCKETS = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "oss", "oci", "tos")
#: Options per protocol. No listing cache: other processes (build workers, other nodes) write the
#: same folders, and a stale listing would hide their shards.
_OPTIONS: dict[str, dict[str, Any]] = {
    "s3": {"use_listings_cache": False},
    "s3a": {"use_listings_cache": False},
    "http": {"use_listings_cache": False},
    "https": {"use_listings_cache": False},
}
#: Environment variables that change what a filesystem object does (credentials, endpoints, regions):
#: a change (a test, a user switching profiles in one process) gets a fresh one.
_ENV_PREFIXES = ("AWS_", "GOOGLE_", "GCSFS_", "AZURE_", "HF_", "FSSPEC_")
_FILESYSTEMS: dict[tuple[str, int, str], Any] = {}


def _protocol(path: str) -> str | None:
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else None


def _known_protocols() -> set[str]:
    import importlib

    registry = importlib.import_module("fsspec.registry")  # `fsspec.registry` the attribute is a mapping
    return set(registry.known_implementations) | set(registry.registry)


def is_url(path: str | os.PathLike) -> bool:
    """True when `path` is a URL of a protocol fsspec knows (s3://, gs://, az://, http(s)://, memory://,
    hf://, a chained `simplecache::s3://...`); False for local paths (a `pathlib.Path` is always one),
    `file://` URLs and webdataset's `pipe:` commands."""
    if not isinstance(path, str):
        return False
    protocol = _protocol(path)
    return protocol is not None and protocol not in _LOCAL and protocol in _known_protocols()


def _local(path: str | os.PathLike) -> str:
    """A local path, `file://` URLs included, as a plain path."""
    text = os.fspath(path)
    if _protocol(text) in _LOCAL and "://" in text:
        from urllib.parse import urlparse
        from urllib.request import url2pathname

        return url2pathname(urlparse(text).path)
    return os.path.expanduser(text)


def shown(url: str | os.PathLike) -> str:
    """`url` for a message: printable, with any `user:password@` masked."""
    return printable(re.sub(r"(://)[^/@\s]+@", r"\1***@", os.fspath(url)))


def join(base: str | os.PathLike, *names: str) -> str:
    """`base` / names: URLs joined with single slashes, local paths with os.path.join."""
    if is_url(base):
        parts = [str(base).rstrip("/"), *(n.strip("/") for n in names if n)]
        return "/".join(parts)
    return os.path.join(os.fspath(base), *names)


def _env_token() -> str:
    items = sorted((k, v) for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    return hashlib.sha256(repr(items).encode("utf-8", "surrogateescape")).hexdigest()


def _filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, its path for `url`). One filesystem per protocol, process and environment
    (a DataLoader worker or a forked process makes its own)."""
    protocol = _protocol(url) or ""
    try:
        import fsspec

        if "::" in url.split("://", 1)[0]:  # chained (simplecache::s3://...): fsspec's own parsing
            from fsspec.core import url_to_fs

            return url_to_fs(url)
        key = (protocol, os.getpid(), _env_token())
        fs = _FILESYSTEMS.get(key)
        if fs is None:
            fs = fsspec.filesystem(protocol, skip_instance_cache=True, **_OPTIONS.get(protocol, {}))
            _FILESYSTEMS[key] = fs
        return fs, fs._strip_protocol(url)
    except ImportError as e:
        need = _PACKAGES.get(protocol)
        what = f"needs {need}" if need else f"needs a package fsspec could not import ({e})"
        raise StorageError(f"{shown(url)}: {protocol}:// {what}") from None


def _endpoint(url: str) -> str:
    protocol = _protocol(url) or ""
    if protocol in ("s3", "s3a"):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return f"the endpoint {shown(endpoint)}" if endpoint else "the default AWS S3 endpoint"
    from urllib.parse import urlparse

    host = urlparse(url).netloc.rsplit("@", 1)[-1]
    return f"the server {host}" if host else "the server"


def _bucket(url: str) -> str | None:
    if _protocol(url) not in _BUCKETS:
        return None
    rest = url.split("://", 1)[1] if "://" in url else ""
    return rest.split("/", 1)[0] or None


def _bucket_missing(url: str) -> bool:
    bucket = _bucket(url)
    if bucket is None:
        return False
    try:
        fs, _ = _filesystem(url)
        return not fs.exists(bucket)
    except Exception:
        return False


def _names(exc: BaseException) -> set[str]:
    return {cls.__name__ for cls in type(exc).__mro__}


def _fail(url: str, exc: BaseException, doing: str = "read") -> StorageError:
    """The one-line StorageError for `exc` raised while `doing` something with `url`."""
    if isinstance(exc, StorageError):
        return exc
    where, names = shown(url), _names(exc)
    protocol = _protocol(url) or ""
    s3 = protocol in ("s3", "s3a")
    if isinstance(exc, ImportError):
        need = _PACKAGES.get(protocol)
        return StorageError(f"{where}: {protocol}:// needs {need}" if need else f"{where}: {exc}")
    if "NoCredentialsError" in names or "PartialCredentialsError" in names:
        how = (
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials"
            if s3
            else "configure this protocol's credentials"
        )
        return StorageError(f"{where}: no credentials found: {how}")
    if names & {"EndpointConnectionError", "ConnectTimeoutError", "ClientConnectorError", "ConnectionError"} or (
        isinstance(exc, OSError) and exc.errno in (111, 113, 101, 110)  # refused, no route, unreachable, timed out
    ):
        how = "check AWS_ENDPOINT_URL (or ~/.aws/config) and the network" if s3 else "check the URL and the network"
        return StorageError(f"{where}: cannot reach {_endpoint(url)}: {how}")
    if isinstance(exc, PermissionError):
        how = (
            "check the credentials (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE and "
            f"~/.aws/credentials) and that they may {doing} this bucket"
            if s3
            else f"check the credentials and that they may {doing} it"
        )
        return StorageError(f"{where}: access denied by {_endpoint(url)}: {how}")
    if isinstance(exc, FileNotFoundError) or "NoSuchBucket" in names:
        if _bucket_missing(url):
            return StorageError(
                f"{where}: the bucket {_bucket(url)!r} does not exist at {_endpoint(url)}: create it, or check the "
                "URL" + (" and AWS_ENDPOINT_URL" if s3 else "")
            )
        return _missing(f"{where}: not found: check the URL")
    reason = " ".join(str(exc).split())[:300] or type(exc).__name__
    return StorageError(f"{where}: cannot {doing} it ({type(exc).__name__}: {printable(reason)})")


# ---- reading ------------------------------------------------------------------------------------------------


def exists(url: str | os.PathLike) -> bool:
    """Whether a file or object (or a folder / prefix) is there. A missing bucket is False; access
    denied or an unreachable endpoint is a StorageError, never a False."""
    if not is_url(url):
        return os.path.exists(_local(url))
    fs, path = _filesystem(str(url))
    try:
        return bool(fs.exists(path))
    except Exception as e:
        raise _fail(str(url), e) from None


def read_bytes(url: str | os.PathLike) -> bytes:
    """The whole file or object."""
    if not is_url(url):
        path = _local(url)
        try:
            with open(path, "rb") as f:
                return f.read()
        except OSError as e:
            raise _local_fail(path, e) from None
    fs, path = _filesystem(str(url))
    try:
        return fs.cat_file(path)
    except Exception as e:
        raise _fail(str(url), e) from None


def _missing(message: str) -> StorageError:
    error = StorageError(message)
    error.missing = True
    return error


def _local_fail(path: str, exc: OSError, doing: str = "read") -> StorageError:
    if isinstance(exc, FileNotFoundError):
        return _missing(f"{shown(path)}: no such file")
    return StorageError(f"{shown(path)}: cannot {doing} it ({exc.strerror or exc})")


def listdir(url: str | os.PathLike, pattern: str = "*") -> list[str]:
    """Sorted full paths / URLs of the entries directly in folder `url` whose name matches the glob
    `pattern` (case-sensitive, e.g. "*.tar"). A folder that is not there lists as empty (object stores
    have no empty folders); a missing bucket, access denied or an unreachable endpoint is a StorageError."""
    if not is_url(url):
        folder = _local(url)
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise _local_fail(folder, e, "list") from None
        return sorted(os.path.join(folder, n) for n in names if fnmatchcase(n, pattern))
    text = str(url).rstrip("/")
    fs, entries = _listed(text, lambda fs, path: fs.ls(path, detail=False))
    prefix = text + "/"
    found = set()
    for entry in entries:
        full = entry if "://" in entry else fs.unstrip_protocol(entry)
        full = full.rstrip("/")
        if not full.startswith(prefix) and _protocol(url) in ("http", "https"):
            continue  # a link of an HTML index page that leads elsewhere
        name = full.rsplit("/", 1)[-1]
        if name and fnmatchcase(name, pattern):
            found.add(prefix + name)
    return sorted(found)


def _listed(text: str, listing) -> tuple[Any, list[str]]:
    """(filesystem, `listing(fs, path)`) for folder URL `text`: a missing folder lists nothing, a missing
    bucket or any other failure is a StorageError."""
    fs, path = _filesystem(text)
    try:
        return fs, listing(fs, path)
    except FileNotFoundError as e:
        if _bucket_missing(text):
            raise _fail(text, e, "list") from None
        return fs, []
    except Exception as e:
        raise _fail(text, e, "list") from None


def find(url: str | os.PathLike) -> list[str]:
    """Sorted full URLs of every file below folder `url`, recursively (for sources of photos)."""
    text = str(url).rstrip("/")
    fs, entries = _listed(text, lambda fs, path: fs.find(path))
    base = fs._strip_protocol(text).rstrip("/") + "/"
    return sorted(text + "/" + e[len(base) :] for e in entries if e.startswith(base))


class _Reader:
    """A binary file of a URL whose errors (a dropped connection mid-shard) come out as StorageError."""

    def __init__(self, f, url: str):
        self._f, self._url = f, url

    def read(self, size: int = -1) -> bytes:
        try:
            return self._f.read(size)
        except Exception as e:
            raise _fail(self._url, e) from None

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._f.close()

    def __getattr__(self, name: str):
        return getattr(self._f, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self):
        return iter(self._f)


def open_read(url: str | os.PathLike) -> IO[bytes]:
    """A binary file to stream from (a context manager). A missing object, bucket, access denied or an
    unreachable endpoint fails here, at open, with a StorageError."""
    if not is_url(url):
        path = _local(url)
        try:
            return open(path, "rb")
        except OSError as e:
            raise _local_fail(path, e) from None
    fs, path = _filesystem(str(url))
    try:
        return _Reader(fs.open(path, "rb"), str(url))  # type: ignore[return-value]
    except Exception as e:
        raise _fail(str(url), e) from None


# ---- writing ------------------------------------------------------------------------------------------------


def _tmp_name(path: str) -> str:
    head, tail = os.path.split(path)
    return os.path.join(head, f".{tail}.{os.getpid()}.tmp")


def write_bytes(url: str | os.PathLike, data: bytes) -> None:
    """Write a whole file or object, atomically: a local file is written beside its place and renamed
    over it (readers see the old file or the new one, never half of one; folders are created); an object
    is one put, which appears whole."""
    if not is_url(url):
        path = _local(url)
        tmp = _tmp_name(path)
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        except OSError as e:
            with _quiet():
                os.remove(tmp)
            raise _local_fail(path, e, "write") from None
        return
    fs, path = _filesystem(str(url))
    try:
        fs.pipe_file(path, bytes(data))
    except Exception as e:
        raise _fail(str(url), e, "write") from None


def remove(url: str | os.PathLike, missing_ok: bool = True) -> None:
    """Delete a file or object; one that is not there is fine unless `missing_ok` is False."""
    if not is_url(url):
        path = _local(url)
        try:
            os.remove(path)
        except FileNotFoundError:
            if not missing_ok:
                raise _missing(f"{shown(path)}: no such file") from None
        except OSError as e:
            raise _local_fail(path, e, "delete") from None
        return
    fs, path = _filesystem(str(url))
    try:
        if not missing_ok and not fs.exists(path):
            raise FileNotFoundError(path)
        fs.rm_file(path)
    except FileNotFoundError as e:
        if not missing_ok:
            raise _fail(str(url), e, "delete") from None
    except Exception as e:
        raise _fail(str(url), e, "delete") from None


class _quiet:
    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> bool:
        return kind is not None and issubclass(kind, OSError)


class _Writer:
    """A binary file that becomes the file or object at `url` when closed, and nothing at all when the
    `with` block fails or `discard()` is called.

    Local files and most URLs: written to a temporary file first, then renamed into place (local) or
    uploaded in one put (a URL). s3://: streamed as a multipart upload (no local copy), completed at
    close, aborted on failure.
    """

    def __init__(self, url: str):
        self.url, self.closed = url, False
        self._direct = None
        if not is_url(url):
            self._path = _local(url)
            os.makedirs(os.path.dirname(self._path) or ".", exist_ok=True)
            self._tmp = _tmp_name(self._path)
            self._f = open(self._tmp, "wb")
            return
        fs, path = _filesystem(url)
        self._fs, self._path = fs, path
        if _protocol(url) in ("s3", "s3a"):
            self._direct = fs.open(path, "wb")
            self._f = self._direct
        else:
            fd, self._tmp = tempfile.mkstemp(prefix="sr-degrade-", suffix=".part")
            self._f = os.fdopen(fd, "wb")

    def write(self, data) -> int:
        try:
            return self._f.write(data)
        except OSError as e:
            raise self._error(e) from None

    def tell(self) -> int:
        return self._f.tell()

    def flush(self) -> None:
        self._f.flush()

    def writable(self) -> bool:
        return True

    def _error(self, e: BaseException) -> StorageError:
        if not is_url(self.url) and isinstance(e, OSError):
            return _local_fail(self._path, e, "write")
        return _fail(self.url, e, "write")

    def close(self) -> None:
        """Finish: the file or object appears now, whole."""
        if self.closed:
            return
        self.closed = True
        try:
            self._f.close()
            if self._direct is not None:
                return
            if not is_url(self.url):
                os.replace(self._tmp, self._path)
            else:
                self._fs.put_file(self._tmp, self._path)
        except Exception as e:
            self._cleanup()
            raise self._error(e) from None
        if is_url(self.url):
            self._cleanup()

    def discard(self) -> None:
        """Throw away what was written: nothing appears."""
        if self.closed:
            return
        self.closed = True
        if self._direct is not None:
            with _quiet():
                self._direct.discard()  # aborts the multipart upload
            self._direct.closed = True  # never flushed by its finaliser either
            return
        with _quiet():
            self._f.close()
        self._cleanup()

    def _cleanup(self) -> None:
        tmp = getattr(self, "_tmp", None)
        if tmp is not None:
            with _quiet():
                os.remove(tmp)

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, tb) -> None:
        if kind is None:
            self.close()
        else:
            self.discard()


def open_write(url: str | os.PathLike) -> _Writer:
    """A binary file for streaming a large file or object (a shard); it appears at `url` only when closed
    (the end of the `with` block), never half-written, and not at all when the block raises."""
    text = os.fspath(url)
    try:
        return _Writer(text)
    except StorageError:
        raise
    except OSError as e:
        if not is_url(text):
            raise _local_fail(_local(text), e, "write") from None
        raise _fail(text, e, "write") from None
    except Exception as e:
        raise _fail(text, e, "write") from None


def copy_folder(src: str | os.PathLike, dst: str | os.PathLike, pattern: str = "*") -> list[str]:
    """Copy the files directly in folder `src` matching `pattern` to folder `dst` (either side local or a
    URL), each atomically; returns the destinations. For uploading a build folder whole."""
    out = []
    for entry in listdir(src, pattern):
        name = entry.rstrip("/").rsplit("/", 1)[-1] if is_url(entry) else os.path.basename(entry)
        if not is_url(entry) and not os.path.isfile(entry):
            continue
        target = join(dst, name)
        with open_read(entry) as r, open_write(target) as w:
            shutil.copyfileobj(r, w, 1 << 20)
        out.append(target)
    return out


__all__ = [
    "StorageError",
    "copy_folder",
    "exists",
    "find",
    "is_url",
    "join",
    "listdir",
    "open_read",
    "open_write",
    "read_bytes",
    "remove",
    "shown",
    "write_bytes",
]


def size(url: str | os.PathLike) -> int:
    """The size in bytes of a file or object (a build's summary counts its shards' bytes)."""
    if not is_url(url):
        path = _local(url)
        try:
            return os.path.getsize(path)
        except OSError as e:
            raise _local_fail(path, e) from None
    fs, path = _filesystem(str(url))
    try:
        return int(fs.size(path))
    except Exception as e:
        raise _fail(str(url), e) from None
