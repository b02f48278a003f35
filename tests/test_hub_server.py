"""The local Hub server, driven end to end by the real huggingface_hub client.

Every test starts its own ``LocalHub`` (about 50 ms) and passes ``endpoint=`` explicitly:
``HF_ENDPOINT`` is read when huggingface_hub is imported, too late to point it elsewhere.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    hf_hub_download,
    set_client_factory,
    snapshot_download,
)
from huggingface_hub.errors import (
    HfHubHTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils._http import default_client_factory

from tests.hub_server import LocalHub, git_blob_oid

REPO = "arena-tester/feedback"


@pytest.fixture
def hub() -> Iterator[LocalHub]:
    with LocalHub() as server:
        yield server


@pytest.fixture
def api(hub: LocalHub) -> HfApi:
    return HfApi(endpoint=hub.endpoint, token=hub.token)


def _add(path: str, content: bytes) -> CommitOperationAdd:
    return CommitOperationAdd(path_in_repo=path, path_or_fileobj=content)


def _commit(api: HfApi, *operations, message: str = "update", **kwargs):
    return api.create_commit(
        REPO, operations=list(operations), commit_message=message, repo_type="dataset", **kwargs
    )


# --- repos ------------------------------------------------------------------------------------


def test_create_repo_info_exists_and_whoami(hub: LocalHub, api: HfApi) -> None:
    url = api.create_repo(REPO, repo_type="dataset", private=True, exist_ok=True)
    assert url == f"{hub.endpoint}/datasets/{REPO}"
    assert (url.repo_id, url.repo_type) == (REPO, "dataset")
    # exist_ok: the Hub's 409 carries the URL, which the client reads.
    assert api.create_repo(REPO, repo_type="dataset", exist_ok=True) == url
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(REPO, repo_type="dataset")
    assert conflict.value.response.status_code == 409

    info = api.dataset_info(REPO)
    assert info.id == REPO and info.private is True
    assert info.sha == hub.head(REPO) == api.repo_info(REPO, repo_type="dataset").sha
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert api.repo_exists(REPO, repo_type="dataset")
    assert not api.repo_exists("arena-tester/other", repo_type="dataset")
    assert not api.repo_exists(REPO)  # a model repo of that name does not exist
    assert api.whoami()["name"] == hub.user
    with pytest.raises(RevisionNotFoundError):
        api.dataset_info(REPO, revision="0" * 40)

    api.delete_repo(REPO, repo_type="dataset")
    assert not hub.exists(REPO)


def test_commits_add_replace_delete(hub: LocalHub, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    first = _commit(
        api,
        _add("data/votes/part-0.jsonl", b'{"winner": "model_a"}\n'),
        _add("data/votes/part-1.jsonl", b'{"winner": "tie"}\n'),
        _add("notes.txt", b"v1"),
        message="Add votes",
        commit_description="two shards",
    )
    assert first.oid == hub.head(REPO)
    assert first.commit_url == f"{hub.endpoint}/datasets/{REPO}/commit/{first.oid}"
    assert first.repo_url.repo_id == REPO

    second = _commit(
        api,
        _add("notes.txt", b"v2"),
        CommitOperationDelete("data/votes/part-1.jsonl"),
        message="Replace and delete",
    )
    assert hub.files(REPO) == {
        ".gitattributes": hub.files(REPO)[".gitattributes"],
        "data/votes/part-0.jsonl": b'{"winner": "model_a"}\n',
        "notes.txt": b"v2",
    }
    # Old revisions stay readable.
    assert hub.files(REPO, revision=first.oid)["notes.txt"] == b"v1"

    _commit(api, CommitOperationDelete("data/", is_folder=True), message="Drop data")
    assert api.list_repo_files(REPO, repo_type="dataset") == [".gitattributes", "notes.txt"]

    commits = hub.commits(REPO)
    assert [(c.title, c.message) for c in commits] == [
        ("initial commit", ""),
        ("Add votes", "two shards"),
        ("Replace and delete", ""),
        ("Drop data", ""),
    ]
    assert commits[2].oid == second.oid and commits[2].parent == first.oid
    listed = api.list_repo_commits(REPO, repo_type="dataset")
    assert [c.commit_id for c in listed] == [c.oid for c in reversed(commits)]
    assert listed[-1].authors == ["system"]

    with pytest.raises(RemoteEntryNotFoundError, match="A file with this name doesn't exist"):
        _commit(api, CommitOperationDelete("nope.txt"))


def test_unchanged_files_are_not_committed_again(hub: LocalHub, api: HfApi) -> None:
    """The preupload answer carries each file's current git oid; the client skips equal ones."""
    api.create_repo(REPO, repo_type="dataset")
    info = _commit(api, _add("a.txt", b"same"))
    hub.clear_requests()
    again = _commit(api, _add("a.txt", b"same"))
    assert again.oid == info.oid
    assert hub.request_count("POST", "/commit/") == 0
    assert hub.request_count("POST", "/preupload/") == 1


def test_parent_commit_must_be_the_head(hub: LocalHub, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    base = hub.head(REPO)
    _commit(api, _add("a.txt", b"1"), parent_commit=base)
    before = hub.files(REPO)
    with pytest.raises(HfHubHTTPError, match="A commit has happened since") as stale:
        _commit(api, _add("b.txt", b"2"), parent_commit=base)
    assert stale.value.response.status_code == 412
    assert hub.files(REPO) == before
    _commit(api, _add("b.txt", b"2"), parent_commit=hub.head(REPO))
    assert "b.txt" in hub.files(REPO)


def test_readme_metadata_is_validated_and_read_back(hub: LocalHub, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    card = b"---\nlicense: cc-by-4.0\npretty_name: Arena feedback\n---\n# Arena feedback\n"
    _commit(api, _add("README.md", card))
    assert api.dataset_info(REPO).card_data["license"] == "cc-by-4.0"
    assert hub.request_count("POST", "/api/validate-yaml") == 1
    with pytest.raises(ValueError, match=r"Invalid metadata in README\.md"):
        _commit(api, _add("README.md", b"---\nlicense: [unclosed\n---\n"))


def test_upload_folder_and_upload_file(hub: LocalHub, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO, repo_type="dataset")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_bytes(b"a\n")
    (tmp_path / "README.md").write_bytes(b"---\nlicense: mit\n---\n")
    api.upload_folder(folder_path=tmp_path, repo_id=REPO, repo_type="dataset")
    api.upload_file(
        path_or_fileobj=b"b\n", path_in_repo="data/b.jsonl", repo_id=REPO, repo_type="dataset"
    )
    files = hub.files(REPO)
    assert files["data/a.jsonl"] == b"a\n" and files["data/b.jsonl"] == b"b\n"
    assert "README.md" in files


# --- listing and downloads ------------------------------------------------------------------


def test_tree_listing_is_paginated_like_the_hub() -> None:
    with LocalHub(tree_page_size=3, commits_page_size=2) as hub:
        api = hub.api()
        api.create_repo(REPO, repo_type="dataset")
        hub.seed(REPO, {f"data/train/part-{i}.jsonl": b"%d" % i for i in range(7)})
        hub.seed(REPO, {"README.md": b"# card"}, message="Card")
        hub.clear_requests()
        files = api.list_repo_files(REPO, repo_type="dataset")
        assert files == sorted(
            [".gitattributes", "README.md"] + [f"data/train/part-{i}.jsonl" for i in range(7)]
        )
        # 9 files and 2 folders in pages of 3, each next page found in the Link header.
        assert hub.request_count("GET", "/tree/main") == 4

        top = {e.path: type(e).__name__ for e in api.list_repo_tree(REPO, repo_type="dataset")}
        assert top == {".gitattributes": "RepoFile", "README.md": "RepoFile", "data": "RepoFolder"}
        sub = list(api.list_repo_tree(REPO, "data/train", repo_type="dataset", expand=True))
        assert len(sub) == 7 and all(e.last_commit.title == "Seed files" for e in sub)
        assert sub[0].blob_id == git_blob_oid(b"0") and sub[0].size == 1
        with pytest.raises(RemoteEntryNotFoundError):
            list(api.list_repo_tree(REPO, "missing", repo_type="dataset"))

        commits = api.list_repo_commits(REPO, repo_type="dataset")
        assert [c.title for c in commits] == ["Card", "Seed files", "initial commit"]
        assert hub.request_count("GET", "/commits/main") == 2


def test_download_a_file_and_a_snapshot(hub: LocalHub, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO, repo_type="dataset")
    old = _commit(
        api, _add("data/a.jsonl", b"old\n"), _add("b.txt", b"b"), _add("données/投票 1.txt", b"v")
    )
    _commit(api, _add("data/a.jsonl", b"new\n"))
    common = {"repo_type": "dataset", "endpoint": hub.endpoint, "token": hub.token}

    path = hf_hub_download(REPO, "data/a.jsonl", cache_dir=tmp_path, **common)
    assert Path(path).read_bytes() == b"new\n"
    old_path = hf_hub_download(REPO, "data/a.jsonl", revision=old.oid, cache_dir=tmp_path, **common)
    assert Path(old_path).read_bytes() == b"old\n"
    with pytest.raises(RemoteEntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", cache_dir=tmp_path, **common)
    unicode_path = hf_hub_download(REPO, "données/投票 1.txt", cache_dir=tmp_path, **common)
    assert Path(unicode_path).read_bytes() == b"v"
    assert api.file_exists(REPO, "b.txt", repo_type="dataset")
    assert not api.file_exists(REPO, "missing.txt", repo_type="dataset")

    folder = Path(snapshot_download(REPO, cache_dir=tmp_path / "snap", **common))
    assert folder.name == hub.head(REPO)
    got = {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }
    assert got == hub.files(REPO)


def test_resolve_headers_head_and_ranges(hub: LocalHub) -> None:
    oid = hub.seed(REPO, {"data/a.jsonl": b"0123456789"})
    url = f"{hub.endpoint}/datasets/{REPO}/resolve/main/data/a.jsonl"
    head = httpx2.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["ETag"] == f'"{git_blob_oid(b"0123456789")}"'
    assert head.headers["X-Repo-Commit"] == oid
    assert head.headers["Content-Length"] == "10"
    part = httpx2.get(url, headers={"Range": "bytes=2-4"})
    assert (part.status_code, part.content) == (206, b"234")
    assert part.headers["Content-Range"] == "bytes 2-4/10"
    missing = httpx2.get(f"{hub.endpoint}/datasets/{REPO}/resolve/main/nope")
    assert missing.status_code == 404
    assert missing.headers["X-Error-Code"] == "EntryNotFound"
    assert missing.headers["X-Repo-Commit"] == oid


# --- auth -------------------------------------------------------------------------------------


def test_private_repo_needs_the_token(hub: LocalHub, api: HfApi, tmp_path: Path) -> None:
    api.create_repo(REPO, repo_type="dataset", private=True)
    _commit(api, _add("a.txt", b"secret votes"))
    anonymous = HfApi(endpoint=hub.endpoint, token=False)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.dataset_info(REPO)
    with pytest.raises(RepositoryNotFoundError):
        anonymous.list_repo_files(REPO, repo_type="dataset")
    assert not anonymous.repo_exists(REPO, repo_type="dataset")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(
            REPO,
            "a.txt",
            repo_type="dataset",
            endpoint=hub.endpoint,
            token=False,
            cache_dir=tmp_path,
        )

    reader = HfApi(endpoint=hub.endpoint, token=hub.read_token)
    assert reader.list_repo_files(REPO, repo_type="dataset") == [".gitattributes", "a.txt"]
    with pytest.raises(HfHubHTTPError) as forbidden:
        reader.create_commit(
            REPO, operations=[_add("b.txt", b"x")], commit_message="m", repo_type="dataset"
        )
    assert forbidden.value.response.status_code == 403

    wrong = HfApi(endpoint=hub.endpoint, token="hf_wrong")
    with pytest.raises(HfHubHTTPError) as unauthorized:
        wrong.dataset_info(REPO)
    assert unauthorized.value.response.status_code == 401
    assert not isinstance(unauthorized.value, RepositoryNotFoundError)


# --- faults -----------------------------------------------------------------------------------


def test_failed_commit_leaves_the_repo_unchanged(hub: LocalHub, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    _commit(api, _add("a.txt", b"1"))
    before, commits = hub.files(REPO), hub.commits(REPO)
    hub.clear_requests()
    hub.fail_next_commit(503)
    with pytest.raises(HfHubHTTPError) as failed:
        _commit(api, _add("b.txt", b"2"))
    assert failed.value.response.status_code == 503
    assert hub.files(REPO) == before and hub.commits(REPO) == commits
    assert hub.request_count("POST", "/commit/") == 1  # create_commit does not retry
    _commit(api, _add("b.txt", b"2"))
    assert hub.files(REPO)["b.txt"] == b"2"


def test_applied_commit_whose_answer_is_lost(hub: LocalHub, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    hub.apply_then_timeout_next_commit(0.05)
    with pytest.raises(httpx2.TransportError):  # RemoteProtocolError: no HfHubHTTPError here
        _commit(api, _add("a.txt", b"1"), message="Lost answer")
    assert hub.files(REPO)["a.txt"] == b"1"
    assert hub.commits(REPO)[-1].title == "Lost answer"
    assert hub.requests[-1].status is None

    hub.apply_then_fail_next_commit(500)
    with pytest.raises(HfHubHTTPError):
        _commit(api, _add("b.txt", b"2"), message="Applied despite 500")
    assert hub.commits(REPO)[-1].title == "Applied despite 500"


def test_late_answer_times_out_a_client_with_a_timeout(hub: LocalHub, api: HfApi) -> None:
    api.create_repo(REPO, repo_type="dataset")
    hub.apply_then_timeout_next_commit(0.6, drop_connection=False)
    set_client_factory(lambda: httpx2.Client(timeout=0.2, follow_redirects=True))
    try:
        with pytest.raises(httpx2.TimeoutException):
            _commit(api, _add("a.txt", b"1"), message="Slow")
    finally:
        set_client_factory(default_client_factory)  # the library's own, with no timeout
    assert hub.commits(REPO)[-1].title == "Slow"


def test_upload_folder_retries_the_commit_post(hub: LocalHub, api: HfApi, tmp_path: Path) -> None:
    """A client quirk the exporter must live with: a lost answer gives two identical commits."""
    api.create_repo(REPO, repo_type="dataset")
    (tmp_path / "a.jsonl").write_bytes(b"a\n")
    hub.apply_then_timeout_next_commit()
    api.upload_folder(
        folder_path=tmp_path, repo_id=REPO, repo_type="dataset", commit_message="Upload"
    )
    assert [c.title for c in hub.commits(REPO)] == ["initial commit", "Upload", "Upload"]

    # With parent_commit the retry is refused (412) although the first attempt was applied.
    (tmp_path / "b.jsonl").write_bytes(b"b\n")
    hub.apply_then_timeout_next_commit()
    with pytest.raises(HfHubHTTPError) as stale:
        api.upload_folder(
            folder_path=tmp_path,
            repo_id=REPO,
            repo_type="dataset",
            commit_message="Guarded",
            parent_commit=hub.head(REPO),
        )
    assert stale.value.response.status_code == 412
    assert hub.commits(REPO)[-1].title == "Guarded"


# --- wire format --------------------------------------------------------------------------------


def test_raw_ndjson_commit_wire_format(hub: LocalHub) -> None:
    """The commit endpoint speaks the Hub's NDJSON directly, without the client."""
    hub.seed(REPO, {"old.txt": b"x"})
    lines = [
        {
            "key": "header",
            "value": {"summary": "Raw", "description": "by hand", "parentCommit": hub.head(REPO)},
        },
        {
            "key": "file",
            "value": {
                "content": base64.b64encode(b"hi").decode(),
                "path": "new.txt",
                "encoding": "base64",
            },
        },
        {"key": "deletedFile", "value": {"path": "old.txt"}},
    ]
    answer = httpx2.post(
        f"{hub.endpoint}/api/datasets/{REPO}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lines),
        headers={"Authorization": f"Bearer {hub.token}", "Content-Type": "application/x-ndjson"},
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["commitOid"] == hub.head(REPO)
    assert body["commitUrl"].endswith(f"/datasets/{REPO}/commit/{body['commitOid']}")
    assert set(hub.files(REPO)) == {".gitattributes", "new.txt"}

    lfs = [
        lines[0] | {"value": {"summary": "LFS"}},
        {"key": "lfsFile", "value": {"path": "big.bin", "algo": "sha256", "oid": "0" * 64}},
    ]
    refused = httpx2.post(
        f"{hub.endpoint}/api/datasets/{REPO}/commit/main",
        content=b"".join(json.dumps(line).encode() + b"\n" for line in lfs),
        headers={"Authorization": f"Bearer {hub.token}"},
    )
    assert refused.status_code == 400 and "LFS" in refused.json()["error"]
