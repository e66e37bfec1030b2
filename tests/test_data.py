"""Corpus preparation, token files, batch sampling, and the checked download of Tiny Shakespeare."""

from __future__ import annotations

import functools
import hashlib
import http.server
import json
import os
import threading

import numpy as np
import pytest

from npgpt.data import corpora
from npgpt.data import tokens as data
from npgpt.data.tokens import TokenData, prepare, sample_batch
from tests.paths import SHAKESPEARE

SHARED_SHAKESPEARE = str(SHAKESPEARE)
TEXT = "hello world, this is a tiny corpus for npgpt.\n" * 20
quiet = functools.partial(prepare, log=lambda *a: None)


def write(tmp_path, name, content) -> str:
    p = tmp_path / name
    p.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return str(p)


def test_prepare_char_roundtrip(tmp_path):
    src = write(tmp_path, "t.txt", TEXT)
    meta = quiet(src, str(tmp_path / "d"))
    d = TokenData(str(tmp_path / "d"))
    assert meta == d.meta
    assert sorted(os.listdir(tmp_path / "d")) == ["meta.json", "tokenizer.json", "train.bin", "val.bin"]
    assert d.train.dtype == np.uint16 and isinstance(d.train, np.memmap)
    assert len(d.train) == int(len(TEXT) * 0.9) and len(d.train) + len(d.val) == len(TEXT)
    assert d.tokenizer.decode(np.concatenate([d.train, d.val])) == TEXT
    assert meta["text_sha256"] == hashlib.sha256(TEXT.encode()).hexdigest()
    assert meta["vocab_size"] == len(set(TEXT)) and meta["tokenizer"]["type"] == "char"
    assert meta["source"] == os.path.abspath(src) and meta["val_fraction"] == 0.1


def test_uint32_when_vocab_exceeds_uint16(tmp_path):
    # 70,000 distinct characters (skipping the surrogates, which UTF-8 cannot hold)
    chars = [chr(c) for c in range(0x100, 0x100 + 72000) if not 0xD800 <= c <= 0xDFFF][:70000]
    text = "".join(chars) * 2
    quiet(write(tmp_path, "wide.txt", text), str(tmp_path / "d"))
    d = TokenData(str(tmp_path / "d"))
    assert d.meta["dtype"] == "uint32" and d.train.dtype == np.uint32
    assert int(d.val.max()) < 70000 and d.tokenizer.decode(d.val[-5:]) == text[-5:]
    assert data.token_dtype(65536) == np.uint16 and data.token_dtype(65537) == np.uint32


def test_get_batch_deterministic_and_shifted(tmp_path):
    quiet(write(tmp_path, "t.txt", TEXT), str(tmp_path / "d"))
    d = TokenData(str(tmp_path / "d"))
    x1, y1 = d.get_batch("train", 4, 8, np.random.default_rng(3))
    x2, y2 = d.get_batch("train", 4, 8, np.random.default_rng(3))
    x3, _ = d.get_batch("train", 4, 8, np.random.default_rng(4))
    assert x1.dtype == np.int64 and y1.dtype == np.int64 and x1.shape == (4, 8) == y1.shape
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert np.array_equal(x1[:, 1:], y1[:, :-1])
    train = np.asarray(d.train, dtype=np.int64)
    for row_x, row_y in zip(x1, y1):  # every row is a window of the token file
        starts = [i for i in range(len(train) - 8) if np.array_equal(train[i:i + 8], row_x)]
        assert any(np.array_equal(train[i + 1:i + 9], row_y) for i in starts)
    with pytest.raises(ValueError, match="split must be one of"):
        d.get_batch("test", 4, 8, np.random.default_rng(0))


def test_sample_batch_every_start_reachable():
    tokens = np.arange(12, dtype=np.uint16)
    x, y = sample_batch(tokens, 2000, 4, np.random.default_rng(0))
    assert set(x[:, 0].tolist()) == set(range(8))  # starts 0..len-block_size-1
    assert np.array_equal(y, x + 1)


def test_block_size_checks_name_sizes(tmp_path):
    src = write(tmp_path, "short.txt", "abcdefghij" * 3)  # 30 chars: 27 train, 3 val
    with pytest.raises(ValueError, match=r"val split has 3 tokens, but block_size 8 needs at least 9"):
        quiet(src, str(tmp_path / "d"), block_size=8)
    assert not os.path.exists(tmp_path / "d" / "meta.json")
    quiet(src, str(tmp_path / "d"))
    d = TokenData(str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"block_size 8 needs at least 9"):
        d.check_block_size(8)
    with pytest.raises(ValueError, match=r"has 3 tokens"):
        d.get_batch("val", 2, 8, np.random.default_rng(0))


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=r"empty\.txt: the file is empty"):
        quiet(write(tmp_path, "empty.txt", b""), str(tmp_path / "d"))
    bad = write(tmp_path, "latin1.txt", "caf".encode() + b"\xe9 au lait")
    with pytest.raises(ValueError, match=r"latin1\.txt: not UTF-8 text: byte 0xe9 at byte offset 3"):
        quiet(bad, str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"known corpora: stdlib, shakespeare_char"):
        quiet("no_such_corpus", str(tmp_path / "d"))
    with pytest.raises(ValueError, match="val_fraction"):
        quiet(write(tmp_path, "t.txt", TEXT), str(tmp_path / "d"), val_fraction=1.0)
    with pytest.raises(ValueError, match="unknown tokenizer 'wordpiece'"):
        quiet(str(tmp_path / "t.txt"), str(tmp_path / "d"), tokenizer="wordpiece")
    with pytest.raises(ValueError, match="no meta.json"):
        TokenData(str(tmp_path))
    assert not os.path.exists(tmp_path / "d" / "meta.json")


def test_failed_prepare_leaves_previous_data(tmp_path, monkeypatch):
    """A full disk half-way through val.bin: the error names d/val.bin, the old data stays whole,
    and nothing is left behind (no hidden temporary file or directory)."""
    import errno

    from npgpt import fileio

    out = str(tmp_path / "d")
    quiet(write(tmp_path, "a.txt", TEXT), out)
    before = {n: (tmp_path / "d" / n).read_bytes() for n in os.listdir(out)}
    real_write = os.write

    def full_disk(fd, buf):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("val.bin"):
            real_write(fd, bytes(buf)[:10])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, buf)

    monkeypatch.setattr(fileio.os, "write", full_disk)
    with pytest.raises(OSError, match=r"No space left on device: .*d/val\.bin$"):
        quiet(write(tmp_path, "b.txt", TEXT.upper() * 2), out)
    monkeypatch.undo()
    after = {n: (tmp_path / "d" / n).read_bytes() for n in os.listdir(out)}
    assert after == before  # nothing replaced
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.txt", "d"]  # no temporaries
    assert TokenData(out).tokenizer.decode(TokenData(out).val) == TEXT[int(len(TEXT) * 0.9):]


def test_truncated_bin_is_refused(tmp_path):
    quiet(write(tmp_path, "t.txt", TEXT), str(tmp_path / "d"))
    p = tmp_path / "d" / "train.bin"
    p.write_bytes(p.read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"train\.bin: expected \d+ uint16 tokens"):
        TokenData(str(tmp_path / "d"))


def test_stdlib_corpus_is_fixed_ascii_python():
    text, desc = corpora.stdlib_text(max_bytes=30_000)
    again, _ = corpora.stdlib_text(max_bytes=30_000)
    assert text == again and text.isascii() and len(text) >= 30_000
    assert text.startswith("# file: ") and "def " in text and "stdlib:" in desc


def test_shakespeare_from_shared_data(tmp_path, monkeypatch):
    if not os.path.isfile(SHARED_SHAKESPEARE):
        pytest.skip(f"{SHARED_SHAKESPEARE} not present (../shared/data beside the checkout)")
    monkeypatch.delenv("NPGPT_DATA", raising=False)
    meta = quiet("shakespeare_char", str(tmp_path / "d"), data_path=os.path.dirname(SHARED_SHAKESPEARE))
    assert (meta["train_tokens"], meta["val_tokens"], meta["vocab_size"]) == (1003854, 111540, 65)
    assert meta["text_sha256"] == corpora.SHAKESPEARE_SHA256
    monkeypatch.setenv("NPGPT_DATA", SHARED_SHAKESPEARE)  # a file given through the variable
    assert corpora.shakespeare_text(log=lambda *a: None)[1] == os.path.abspath(SHARED_SHAKESPEARE)


def test_shakespeare_checks_local_copies(tmp_path, monkeypatch):
    monkeypatch.setenv("NPGPT_DATA", str(tmp_path))
    write(tmp_path, "tinyshakespeare.txt", "not shakespeare")
    with pytest.raises(ValueError, match=r"tinyshakespeare\.txt: sha256 [0-9a-f]{64} is not Tiny Shakespeare"):
        corpora.shakespeare_text(log=lambda *a: None)
    with pytest.raises(ValueError, match="--data-path"):
        corpora.shakespeare_text(data_path=str(tmp_path / "nowhere"), log=lambda *a: None)


class _Server:
    """http.server on 127.0.0.1 in a daemon thread, serving one folder."""

    def __init__(self, folder):
        handler = functools.partial(_QuietHandler, directory=str(folder))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def no_proxy(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")


def test_download_checks_sha256(tmp_path, no_proxy):
    served = tmp_path / "served"
    served.mkdir()
    payload = b"first citizen: before we proceed any further, hear me speak.\n" * 50
    (served / "input.txt").write_bytes(payload)
    dest_dir = tmp_path / "cache"
    with _Server(served) as srv:
        corpora.download(f"{srv.url}/input.txt", str(dest_dir / "a.txt"), hashlib.sha256(payload).hexdigest(), timeout=10)
        assert (dest_dir / "a.txt").read_bytes() == payload
        with pytest.raises(ValueError, match=r"downloaded file has sha256 [0-9a-f]{64}, expected 0{64}; nothing was kept"):
            corpora.download(f"{srv.url}/input.txt", str(dest_dir / "b.txt"), "0" * 64, timeout=10)
        assert sorted(os.listdir(dest_dir)) == ["a.txt"]  # no b.txt, no .part left behind
        with pytest.raises(RuntimeError, match=r"could not download .*--data-path FILE.*NPGPT_DATA"):
            corpora.download(f"{srv.url}/missing.txt", str(dest_dir / "c.txt"), "0" * 64, timeout=10)
        assert sorted(os.listdir(dest_dir)) == ["a.txt"]


def test_shakespeare_download_end_to_end(tmp_path, monkeypatch, no_proxy):
    if not os.path.isfile(SHARED_SHAKESPEARE):
        pytest.skip(f"{SHARED_SHAKESPEARE} not present (../shared/data beside the checkout)")
    monkeypatch.delenv("NPGPT_DATA", raising=False)
    monkeypatch.setenv("NPGPT_CACHE", str(tmp_path / "cache"))
    with _Server(os.path.dirname(os.path.abspath(SHARED_SHAKESPEARE))) as srv:
        monkeypatch.setenv("NPGPT_SHAKESPEARE_URL", f"{srv.url}/tinyshakespeare.txt")
        text, source = corpora.shakespeare_text(log=lambda *a: None)
    assert source.endswith("/tinyshakespeare.txt") and len(text) == 1115394
    assert os.listdir(tmp_path / "cache") == ["tinyshakespeare.txt"]
    text2, source2 = corpora.shakespeare_text(log=lambda *a: None)  # now from the cache, server gone
    assert text2 == text and source2 == str(tmp_path / "cache" / "tinyshakespeare.txt")


def test_shakespeare_offline_message(tmp_path, monkeypatch, no_proxy):
    monkeypatch.delenv("NPGPT_DATA", raising=False)
    monkeypatch.setenv("NPGPT_CACHE", str(tmp_path / "cache"))
    with _Server(tmp_path) as srv:
        url = srv.url
    # the server is shut: connection refused, as when offline
    with pytest.raises(RuntimeError, match="Offline.*--data-path"):
        corpora.shakespeare_text(url=f"{url}/x.txt", log=lambda *a: None)
    assert os.listdir(tmp_path / "cache") == []


def test_shakespeare_download_path_with_a_stand_in_file(tmp_path, monkeypatch, no_proxy):
    """The whole shakespeare_char download path (URL override, checksum, cache) on a small stand-in
    served from 127.0.0.1, so it runs without ../shared/data too."""
    served = tmp_path / "served"
    served.mkdir()
    payload = "First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 40
    (served / "input.txt").write_text(payload, encoding="utf-8")
    monkeypatch.setattr(corpora, "SHAKESPEARE_SHA256", hashlib.sha256(payload.encode("utf-8")).hexdigest())
    monkeypatch.delenv("NPGPT_DATA", raising=False)
    monkeypatch.setenv("NPGPT_CACHE", str(tmp_path / "cache"))
    with _Server(served) as srv:
        monkeypatch.setenv("NPGPT_SHAKESPEARE_URL", f"{srv.url}/input.txt")
        meta = quiet("shakespeare_char", str(tmp_path / "d"))
    assert meta["text_sha256"] == corpora.SHAKESPEARE_SHA256 and meta["text_chars"] == len(payload)
    assert os.listdir(tmp_path / "cache") == ["tinyshakespeare.txt"]
    assert corpora.shakespeare_text(log=lambda *a: None)[0] == payload  # from the cache, server gone
    (tmp_path / "cache" / "tinyshakespeare.txt").write_text(payload + "tampered", encoding="utf-8")
    with pytest.raises((ValueError, RuntimeError), match="sha256"):
        corpora.shakespeare_text(url=f"{srv.url}/input.txt", log=lambda *a: None)  # bad cache, server gone


def test_prepared_files_are_readable_by_others(tmp_path):
    umask = os.umask(0o022)
    try:
        quiet(write(tmp_path, "t.txt", TEXT), str(tmp_path / "d"))
    finally:
        os.umask(umask)
    for name in ("train.bin", "val.bin", "meta.json", "tokenizer.json"):
        assert os.stat(tmp_path / "d" / name).st_mode & 0o777 == 0o644, name


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_prepare_refuses_a_bad_block_size(tmp_path, bad):
    with pytest.raises(ValueError, match="block_size must be a positive integer"):
        quiet(write(tmp_path, "t.txt", TEXT), str(tmp_path / "d"), block_size=bad)


def test_meta_json_is_plain_json(tmp_path):
    quiet(write(tmp_path, "t.txt", TEXT), str(tmp_path / "d"))
    meta = json.loads((tmp_path / "d" / "meta.json").read_text())
    assert meta["train_tokens"] * 2 == os.path.getsize(tmp_path / "d" / "train.bin")


def test_prepare_bpe_and_reuse_tokenizer_file(tmp_path):
    src = write(tmp_path, "t.txt", TEXT + "<|endoftext|>" + TEXT)
    meta = quiet(src, str(tmp_path / "bpe"), tokenizer="bpe", vocab_size=270)
    d = TokenData(str(tmp_path / "bpe"))
    assert meta["tokenizer"]["type"] == "bpe" and d.vocab_size == 270
    assert d.tokenizer.eot_id is not None and d.tokenizer.eot_id in set(np.concatenate([d.train, d.val]).tolist())
    assert len(d.train) + len(d.val) < 2 * len(TEXT)  # merges shorten the text
    assert d.tokenizer.decode(np.concatenate([d.train, d.val])) == TEXT + "<|endoftext|>" + TEXT
    again = quiet(src, str(tmp_path / "again"), tokenizer_file=str(tmp_path / "bpe" / "tokenizer.json"))
    assert again["train_tokens"] == meta["train_tokens"] and again["tokenizer"]["type"] == "bpe"
    with pytest.raises(ValueError, match="needs --vocab-size"):
        quiet(src, str(tmp_path / "x"), tokenizer="bpe")
    with pytest.raises(ValueError, match="--vocab-size applies to the bpe tokenizer"):
        quiet(src, str(tmp_path / "x"), vocab_size=300)
