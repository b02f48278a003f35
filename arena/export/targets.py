"""Where a batch is published: a local folder, or a Hub dataset repo in one commit per batch.

A target receives ``{path_in_repo: local_file}`` and either publishes all of it or raises. The
paths of a batch are deterministic, so publishing a batch again replaces the same files: a retry
after an uncertain failure can never duplicate a row.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Protocol

import httpx2
from huggingface_hub import (
    CommitOperation,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    set_client_factory,
    snapshot_download,
)
from huggingface_hub.errors import HfHubHTTPError, RepositoryNotFoundError

log = logging.getLogger("arena.export")


class PublishError(Exception):
    """The batch was not published; it is retried, with the same file names, next time."""


class Target(Protocol):
    key: str
    """Names the target in the store's export state: each target has its own watermark."""
    repo_id: str | None

    def publish(self, files: Mapping[str, Path], message: str) -> str | None:
        """Publish every file or raise `PublishError`; returns the commit id, if any."""
        ...

    def has_data(self) -> bool:
        """Whether the target already holds data files (from this store or an earlier one)."""
        ...

    def fetch_data(self, scratch: Path) -> dict[str, Path]:
        """Every published data file, as path in the dataset -> a local copy (or the file)."""
        ...

    def replace(self, add: Mapping[str, Path], delete: Collection[str], message: str) -> str | None:
        """Add and delete files at once (at least as seen by readers); returns the commit id."""
        ...


class LocalFolder:
    """The dataset layout written to a folder (the default, when no Hub repo is configured)."""

    repo_id = None

    def __init__(self, root: Path) -> None:
        self.root = root
        self.key = "local"

    def publish(self, files: Mapping[str, Path], message: str) -> str | None:
        # The data files first, the card last; each file is replaced atomically.
        for path_in_repo, source in sorted(files.items(), key=lambda kv: kv[0] == "README.md"):
            destination = self.root / path_in_repo
            destination.parent.mkdir(parents=True, exist_ok=True)
            staged = destination.with_name(f".{destination.name}.tmp")
            shutil.copyfile(source, staged)
            staged.replace(destination)
        return None

    def has_data(self) -> bool:
        return any((self.root / "data").glob("*/*.parquet"))

    def fetch_data(self, scratch: Path) -> dict[str, Path]:
        return {
            path.relative_to(self.root).as_posix(): path
            for path in sorted((self.root / "data").glob("*/*.parquet"))
        }

    def replace(self, add: Mapping[str, Path], delete: Collection[str], message: str) -> str | None:
        # New files first, then the old ones go: a crash in between leaves rows twice in the
        # folder, which the next compaction merges again (restore keeps one of each).
        self.publish(add, message)
        for path in delete:
            (self.root / path).unlink(missing_ok=True)
        return None


def use_hub_timeout(seconds: float) -> None:
    """Give huggingface_hub's (process-wide) HTTP client a timeout: by default it has none."""
    set_client_factory(lambda: httpx2.Client(timeout=seconds, follow_redirects=True))


class HubRepo:
    """A Hub dataset repo, created if missing; one ``create_commit`` per batch.

    ``create_commit`` never retries the commit POST, and a lost answer surfaces as an
    ``httpx2.TransportError`` (or a 5xx the Hub may send after applying the commit): then the
    repo is read again, and the batch counts as published if all its files are there.
    """

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None = None,
        endpoint: str | None = None,
        private: bool = False,
    ) -> None:
        self.repo_id = repo_id
        self.key = f"hub:{repo_id}"
        self.api = HfApi(endpoint=endpoint, token=token)
        self._private = private
        self._created = False

    def publish(self, files: Mapping[str, Path], message: str) -> str | None:
        operations: list[CommitOperation] = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(source))
            for path, source in sorted(files.items())
        ]
        return self._commit(operations, message, present=list(files), absent=[])

    def _commit(
        self,
        operations: list[CommitOperation],
        message: str,
        *,
        present: Collection[str],
        absent: Collection[str],
    ) -> str | None:
        """One commit; after an uncertain failure, landed if ``present`` and ``absent`` hold."""
        try:
            self._ensure_repo()
            info = self.api.create_commit(
                self.repo_id, operations, commit_message=message, repo_type="dataset"
            )
            return info.oid
        except (httpx2.TransportError, HfHubHTTPError) as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            if isinstance(error, HfHubHTTPError) and status is not None and status < 500:
                raise PublishError(
                    f"the Hub refused the commit to {self.repo_id}: {error}"
                ) from error
            log.warning("commit to %s uncertain (%s); reading the repo back", self.repo_id, error)
            landed = self._landed(present, absent)
            if landed is None:
                raise PublishError(
                    f"the commit to {self.repo_id} may or may not have landed ({error}); it is "
                    "retried with the same file names at the next push"
                ) from error
            return landed

    def has_data(self) -> bool:
        try:
            info = self.api.dataset_info(self.repo_id)
        except RepositoryNotFoundError:
            return False
        except (httpx2.TransportError, HfHubHTTPError) as error:
            raise PublishError(f"cannot read {self.repo_id}: {error}") from error
        return any(s.rfilename.startswith("data/") for s in info.siblings or [])

    def fetch_data(self, scratch: Path) -> dict[str, Path]:
        try:
            folder = Path(
                snapshot_download(
                    self.repo_id,
                    repo_type="dataset",
                    allow_patterns=["data/*"],
                    local_dir=scratch,
                    endpoint=self.api.endpoint,
                    token=self.api.token,
                )
            )
        except RepositoryNotFoundError:
            return {}
        except (httpx2.TransportError, HfHubHTTPError) as error:
            raise PublishError(f"cannot download {self.repo_id}: {error}") from error
        return {
            path.relative_to(folder).as_posix(): path
            for path in sorted((folder / "data").glob("*/*.parquet"))
        }

    def replace(self, add: Mapping[str, Path], delete: Collection[str], message: str) -> str | None:
        operations: list[CommitOperation] = [
            CommitOperationAdd(path_in_repo=path, path_or_fileobj=str(source))
            for path, source in sorted(add.items())
        ]
        operations += [CommitOperationDelete(path_in_repo=path) for path in sorted(delete)]
        return self._commit(operations, message, present=list(add), absent=list(delete))

    def _ensure_repo(self) -> None:
        if not self._created:
            self.api.create_repo(
                self.repo_id, repo_type="dataset", private=self._private, exist_ok=True
            )
            self._created = True

    def _landed(self, present: Collection[str], absent: Collection[str]) -> str | None:
        """The head commit if the data files are there and the deleted ones gone, else None."""
        try:
            info = self.api.dataset_info(self.repo_id, files_metadata=False)
            files = {sibling.rfilename for sibling in info.siblings or []}
        except (httpx2.TransportError, HfHubHTTPError) as error:
            log.warning("cannot read %s back: %s", self.repo_id, error)
            return None
        data = [path for path in present if path != "README.md"]
        landed = all(path in files for path in data) and not any(p in files for p in absent)
        return info.sha if landed else None
