"""Acceptance corpus of hostile inputs (issue 13): generated here, on every run.

* **Network files**: two valid files (``zoo``: every node kind, MSAT with spike confidence, not netx-loadable;
  ``chain``: const, netx-loadable) are mutated over their datasets — every dataset of ``chain``, every third one
  of ``zoo``, and every model-parameter and table dataset of the zoo graph converted with ``dtif-r`` and
  ``bsnn-r`` — with a rotating mutator (delete, change dtype, change shape, negate, scale, NaN/extreme, huge
  declared shape, +1, zero, null, other string, extra attribute), plus structural mutants (external / soft links,
  virtual datasets, external storage, foreign filters, hard-link aliases and cycles, extra / missing groups, a
  deleted, emptied or renamed ``/msat`` (which must not pass for a plain netx file),
  truncation, byte corruption in a subprocess). Each mutant goes through ``msat-lava run`` (and every eighth
  through ``info``) in process via :func:`msat_lava.cli.main`.
* **Data files** (``.npz``) and **model files** (``.pt2`` / weights with pickle payloads) on ``run`` / ``convert``.

Asserted: crashes 0 (only exit 0 or 2), hangs 0 (20 s alarm per input), partial files 0 (no output or temporary
left by a refusal), accepted-but-wrong 0 (an accepted network mutant gives the original predictions, fixed and
float; ``provenance/seed``, the one field no derivation checks, is covered by the content digest of format 1.3),
every refusal exit 2 with one line naming the file and (network files) the field. The counts are printed
and written to ``$MSAT_HOSTILE_COUNTS`` when set. Peak memory of ``info``/``run`` on hostile files stays under
2x that of the valid file (subprocesses, peak RSS).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import h5py
import numpy as np
import pytest

from msat_lava import cli

pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]
STEPS = 6
HANG_S = 20


# ---------------------------------------------------------------------------------------------------------
# base files and the harness
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from test_hdf5 import chain_net, zoo_net

    from netx_export import hdf5

    root = tmp_path_factory.mktemp("hostile")
    bases = {}
    from test_hdf5 import LAMS, zoo_graph

    from netx_export.quantize import quantize

    # the registry models beyond the MSAT family: their parameters and tables are mutated below (BSNN-R with one
    # phase per cycle so that its readout moves within the STEPS of the run)
    extra = {m: quantize(zoo_graph(), LAMS, input_scale=2.0, method=m, params=p, seed=5)
             for m, p in (("dtif-r", {"beta": 2.0}), ("bsnn-r", {"k": 1}))}
    for name, net, shape in (("zoo", zoo_net(), (3, 8, 8)), ("chain", chain_net(), (2, 6, 5)),
                             ("dtif", extra["dtif-r"], (3, 8, 8)), ("bsnn", extra["bsnn-r"], (3, 8, 8))):
        path = hdf5.write(net, root / f"{name}.net")
        data = root / f"{name}_data.npz"
        rng = np.random.default_rng(7)
        np.savez(data, x=(rng.normal(size=(4,) + shape) * 0.7).astype(np.float32),
                 y=rng.integers(0, 4, size=4))
        want = {}
        for backend in ("ref-fixed", "ref-float"):
            code, _, err, preds = _run_cli(["run", str(path), "--data", str(data), "--steps", str(STEPS),
                                            "--backend", backend, "--json"], root / "base_pred.npz")
            assert code == 0, err
            want[backend] = preds
        bases[name] = {"path": path, "data": data, "want": want}
    return root, bases


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _call(argv: list[str]) -> tuple[int | str, str, str]:
    out, err = io.StringIO(), io.StringIO()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_S)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code: int | str = cli.main(argv)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 2
    except Hang:
        code = "hang"
    except BaseException as exc:  # noqa: BLE001 - a crash is what we count
        code = f"crash: {type(exc).__name__}: {exc}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return code, out.getvalue(), err.getvalue()


def _run_cli(argv: list[str], pred: Path) -> tuple[int | str, str, str, np.ndarray | None]:
    if pred.exists():
        pred.unlink()
    code, out, err = _call(argv + ["--predictions", str(pred)])
    preds = None
    if code == 0 and pred.exists():
        with np.load(pred) as p:
            preds = p["predictions"].copy()
    return code, out, err, preds


def _leftovers(directory: Path, allowed: set[str]) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name not in allowed)


# ---------------------------------------------------------------------------------------------------------
# mutators: (h5py.File, path) -> True if applied
# ---------------------------------------------------------------------------------------------------------

def _value(f, path):
    return f[path][()]


def _recreate(f, path, data, **kw):
    del f[path]
    f.create_dataset(path, data=data, **kw)


def _is_string(ds) -> bool:
    return h5py.check_string_dtype(ds.dtype) is not None or ds.dtype.kind == "S"


def m_delete(f, path):
    del f[path]
    return True


def m_retype(f, path):
    ds = f[path]
    if ds.shape is None:
        return False
    if _is_string(ds):
        _recreate(f, path, np.int64(0))
        return True
    v = np.asarray(ds[()])
    new = {"f": np.float32, "i": np.float64, "u": np.int64, "b": np.int64}[v.dtype.kind]
    if v.dtype == np.float32:
        new = np.float64
    _recreate(f, path, v.astype(new))
    return True


def m_reshape(f, path):
    ds = f[path]
    if ds.shape is None or _is_string(ds):
        return False
    v = np.asarray(ds[()])
    _recreate(f, path, np.resize(v, (2,) if v.ndim == 0 else (v.shape[0] + 1,) + v.shape[1:]).astype(v.dtype))
    return True


def _numeric(f, path):
    ds = f[path]
    if ds.shape is None or _is_string(ds) or ds.dtype.kind == "b":
        return None
    return np.array(ds[()])


def m_negate(f, path):
    v = _numeric(f, path)
    if v is None or not np.any(v != 0) or v.dtype.kind == "u":
        return False
    f[path][...] = -v
    return True


def m_scale(f, path):
    v = _numeric(f, path)
    if v is None or not np.any(v != 0):
        return False
    f[path][...] = (v * 2).astype(v.dtype) if v.dtype.kind == "f" else np.clip(v.astype(np.int64) * 2,
                                                                               np.iinfo(v.dtype).min,
                                                                               np.iinfo(v.dtype).max)
    return True


def m_nan(f, path):
    v = _numeric(f, path)
    if v is None or v.size == 0:
        return False
    flat = v.reshape(-1)
    flat[0] = np.nan if v.dtype.kind == "f" else np.iinfo(v.dtype).max
    f[path][...] = v
    return True


def m_huge(f, path):
    ds = f[path]
    if ds.shape is None or _is_string(ds):
        return False
    dtype = ds.dtype
    del f[path]
    f.create_dataset(path, shape=(1 << 28,), dtype=dtype, chunks=(1 << 16,), compression="gzip")
    return True


def m_bump(f, path):
    ds = f[path]
    if ds.shape is None:
        return False
    if _is_string(ds):
        if ds.shape != ():
            return False
        text = ds[()]
        text = text.decode() if isinstance(text, bytes) else str(text)
        _recreate(f, path, text + "x", dtype=h5py.string_dtype())
        return True
    v = np.array(ds[()])
    if v.size == 0:
        return False
    flat = v.reshape(-1)
    flat[0] = (not flat[0]) if v.dtype.kind == "b" else flat[0] + 1
    f[path][...] = v
    return True


def m_zero(f, path):
    v = _numeric(f, path)
    if v is None or not np.any(v != 0):
        return False
    f[path][...] = np.zeros_like(v)
    return True


def m_null(f, path):
    if f[path].shape is None:
        return False
    _recreate(f, path, h5py.Empty("f8"))
    return True


def m_string(f, path):
    ds = f[path]
    if not _is_string(ds) or ds.shape is None:
        return False
    if ds.shape == ():
        _recreate(f, path, "", dtype=h5py.string_dtype())
    else:
        _recreate(f, path, np.array(["zz"] * (ds.shape[0] + 1), dtype=object), dtype=h5py.string_dtype())
    return True


def m_attribute(f, path):
    f[path].attrs["note"] = "attributes carry no information"
    return True


MUTATORS = [m_delete, m_retype, m_reshape, m_negate, m_scale, m_nan, m_huge, m_bump, m_zero, m_null, m_string,
            m_attribute]


def _structural(f, kind, path):
    d = os.path.dirname(f.filename)
    if kind == "external-link":
        with h5py.File(os.path.join(d, "other.h5"), "w") as g:
            g.create_dataset("v", data=f[path][()])
        del f[path]
        f[path] = h5py.ExternalLink(os.path.join(d, "other.h5"), "/v")
    elif kind == "external-link-missing":
        del f[path]
        f[path] = h5py.ExternalLink(os.path.join(d, "missing.h5"), "/v")
    elif kind == "soft-link":
        f.move(path, path + "_real")
        f[path] = h5py.SoftLink("/" + path + "_real")
    elif kind == "dangling-soft-link":
        del f[path]
        f[path] = h5py.SoftLink("/nowhere")
    elif kind in ("virtual", "virtual-present"):
        value = np.asarray(f[path][()])
        src = os.path.join(d, "vsrc.h5")
        if kind == "virtual-present":
            with h5py.File(src, "w") as g:
                g.create_dataset("v", data=value)
        del f[path]
        layout = h5py.VirtualLayout(shape=value.shape, dtype=value.dtype)
        layout[...] = h5py.VirtualSource(src, "v", shape=value.shape)
        f.create_virtual_dataset(path, layout, fillvalue=0)
    elif kind == "external-storage":
        value = np.asarray(f[path][()])
        raw = os.path.join(d, "raw.bin")
        with open(raw, "wb") as fh:
            fh.write(value.tobytes())
        del f[path]
        f.create_dataset(path, shape=value.shape, dtype=value.dtype, external=[(raw, 0, value.nbytes)])
    elif kind == "lzf":
        _recreate(f, path, np.asarray(f[path][()]), compression="lzf")
    elif kind == "scaleoffset":
        v = np.asarray(f[path][()])
        _recreate(f, path, v, scaleoffset=0 if v.dtype.kind in "iu" else 3, chunks=True)
    elif kind == "rechunk-uncompressed":  # a different layout of the same values: must be accepted, equal
        v = np.asarray(f[path][()])
        _recreate(f, path, v)
    elif kind == "hard-alias":
        f[path + "_alias"] = f[path]
    elif kind == "cycle":
        f[path + "/loop"] = f[path]
    elif kind == "delete-group":
        del f[path]
    elif kind == "empty-group":  # the group stays, its members go
        for key in list(f[path].keys()):
            del f[path][key]
    elif kind == "rename":
        f.move(path, path + "_old")
    elif kind == "extra-group":
        f.create_group(path + "/extra")
    elif kind == "index-gap":
        parent, last = path.rsplit("/", 1)
        f.move(path, f"{parent}/{int(last) + 7}")
    elif kind == "committed-type":
        f[path + "_t"] = np.dtype("f8")
    elif kind == "compound":
        _recreate(f, path, np.zeros(2, dtype=[("a", "i4"), ("b", "f8")]))
    elif kind == "huge-real":  # a genuinely stored, well-compressed 12 MB array in place of a weight
        _recreate(f, path, np.zeros((1 << 20, 3), np.float32), compression="gzip", chunks=(1 << 16, 3))
    else:  # pragma: no cover
        raise AssertionError(kind)
    return True


STRUCTURAL = [
    ("zoo", "external-link", "msat/input/scale"), ("zoo", "external-link", "msat/graph/1/weight"),
    ("zoo", "external-link-missing", "msat/targets/0/bias"), ("chain", "external-link", "layer/1/weight"),
    ("zoo", "soft-link", "msat/targets/1/bias"), ("chain", "soft-link", "msat/graph/1/weight"),
    ("zoo", "dangling-soft-link", "msat/neurons/0/spec/lam"),
    ("zoo", "virtual", "msat/targets/0/bias"), ("zoo", "virtual-present", "msat/graph/3/weight"),
    ("chain", "virtual", "layer/3/weight"), ("zoo", "external-storage", "msat/graph/5/weight"),
    ("chain", "external-storage", "msat/targets/1/bias"), ("zoo", "lzf", "msat/targets/2/bias"),
    ("zoo", "scaleoffset", "msat/graph/10/weight"), ("chain", "rechunk-uncompressed", "msat/graph/4/weight"),
    ("zoo", "rechunk-uncompressed", "msat/neurons/1/lut/det_lut"),
    ("zoo", "hard-alias", "msat/targets/0/bias"), ("zoo", "cycle", "msat/graph"), ("chain", "cycle", "layer/1"),
    ("zoo", "delete-group", "msat/report"), ("zoo", "delete-group", "msat/targets/2/terms/1"),
    ("chain", "delete-group", "layer/3/neuron"), ("zoo", "delete-group", "msat/neurons/1/lut"),
    ("zoo", "extra-group", "msat/targets/0"), ("chain", "extra-group", "layer"),
    ("zoo", "index-gap", "msat/graph/16"), ("zoo", "index-gap", "msat/neurons/3"),
    ("chain", "index-gap", "layer/4"), ("zoo", "committed-type", "msat/graph/0/shape"),
    ("zoo", "compound", "msat/targets/0/bias"), ("chain", "huge-real", "msat/graph/4/weight"),
    # the whole extension lost: the rest must not pass for a plain netx file (chain's /layer is a loadable netx
    # view; msat_lava.netx_peer.network_file_kind, docs/FORMAT.md §2.1)
    ("chain", "delete-group", "msat"), ("zoo", "delete-group", "msat"), ("chain", "empty-group", "msat"),
    ("chain", "rename", "msat"),
]


def _datasets(path: Path) -> list[str]:
    names: list[str] = []
    with h5py.File(path, "r") as f:
        f.visititems(lambda name, obj: names.append(name) if isinstance(obj, h5py.Dataset) else None)
    return sorted(names)


def _mutants(bases) -> list[tuple[str, str, str, object]]:
    """(base, label, target path, mutate callable)."""
    out = []
    for base, stride in (("chain", 1), ("zoo", 3), ("dtif", 1), ("bsnn", 1)):
        paths = _datasets(bases[base]["path"])
        if base in ("dtif", "bsnn"):  # every dataset of the models' own parameters and tables
            paths = [p for p in paths if p.startswith("msat/neurons/") and ("/spec/params" in p or "/lut" in p)]
        for k, path in enumerate(paths[::stride]):
            for j in range(len(MUTATORS)):
                m = MUTATORS[(k + j + (5 if base == "zoo" else 0)) % len(MUTATORS)]
                out.append((base, m.__name__[2:], path, m))
                break  # one mutator per dataset; _apply moves to the next applicable one
    for base, kind, path in STRUCTURAL:
        out.append((base, kind, path, lambda f, p, kind=kind: _structural(f, kind, p)))
    return out


def _apply(f, mutate, path, label) -> str:
    if mutate(f, path):
        return label
    start = next(i for i, m in enumerate(MUTATORS) if m.__name__[2:] == label)
    for j in range(1, len(MUTATORS)):
        m = MUTATORS[(start + j) % len(MUTATORS)]
        if m(f, path):
            return m.__name__[2:]
    raise AssertionError(f"no mutator applies to {path}")  # pragma: no cover


# ---------------------------------------------------------------------------------------------------------
# the corpus
# ---------------------------------------------------------------------------------------------------------

def _check_refusal(err: str, path: Path, need_field: bool) -> str | None:
    lines = [line for line in err.strip().splitlines() if line and ": warning: " not in line]
    if len(lines) != 1:
        return f"{len(lines)} lines"
    if "Traceback" in err:
        return "traceback"
    if str(path) not in lines[0]:
        return "file not named"
    if need_field and "field '" not in lines[0]:
        return "field not named"
    return None


def test_network_file_corpus(corpus, capsys):
    root, bases = corpus
    work = root / "net_mutants"
    work.mkdir()
    counts: Counter = Counter()
    problems: list[str] = []
    by_mutator: Counter = Counter()
    for i, (base, label, target, mutate) in enumerate(_mutants(bases)):
        b = bases[base]
        case = work / f"m{i:04d}.net"
        shutil.copyfile(b["path"], case)
        with h5py.File(case, "r+") as f:
            label = _apply(f, mutate, target, label)
        by_mutator[label] += 1
        counts["generated"] += 1
        pred = work / "pred.npz"
        argv = ["run", str(case), "--data", str(b["data"]), "--steps", str(STEPS), "--json"]
        code, _, err, preds = _run_cli(argv, pred)
        where = f"{base}:{target}:{label}"
        if i % 8 == 0:
            icode, _, ierr = _call(["info", str(case), "--json"])
            if icode != code:
                problems.append(f"{where}: info exit {icode} vs run exit {code}: {ierr.strip()[:200]}")
        if code == "hang":
            counts["hangs"] += 1
            problems.append(f"{where}: hang")
        elif code not in (0, 2):
            counts["crashes"] += 1
            problems.append(f"{where}: exit {code}: {err.strip()[-300:]}")
        elif code == 2:
            counts["refused"] += 1
            bad = _check_refusal(err, case, need_field=True)
            if bad:
                counts["refusals_badly_named"] += 1
                problems.append(f"{where}: refusal message {bad}: {err.strip()[:300]}")
            if pred.exists():
                counts["partial_files"] += 1
        else:
            _, _, ferr, fpreds = _run_cli(argv + ["--backend", "ref-float"], pred)
            equal = (preds is not None and np.array_equal(preds, b["want"]["ref-fixed"]) and fpreds is not None
                     and np.array_equal(fpreds, b["want"]["ref-float"]))
            if equal:
                counts["accepted_equal"] += 1
                if os.environ.get("MSAT_HOSTILE_VERBOSE"):
                    print("accepted:", where)
            else:
                counts["accepted_wrong"] += 1
                problems.append(f"{where}: accepted with different predictions")
        left = _leftovers(work, {case.name, "pred.npz", "other.h5", "vsrc.h5", "raw.bin"})
        if left:
            counts["partial_files"] += 1
            problems.append(f"{where}: left {left}")
        case.unlink()
        for extra in ("pred.npz", "other.h5", "vsrc.h5", "raw.bin"):
            if (work / extra).exists():
                (work / extra).unlink()
    # truncations and byte corruption, in a subprocess (a crash there cannot take the test run down)
    sub = _corrupted_files(root, bases, work)
    for key, value in sub["counts"].items():
        counts[key] += value
    problems += sub["problems"]
    counts["generated"] += sub["generated"]
    summary = {"network_files": dict(counts), "by_mutator": dict(by_mutator)}
    print("\nhostile network-file corpus:", json.dumps(summary, indent=1))
    _record("network_files", summary)
    assert counts["generated"] >= 300
    assert not problems, "\n".join(problems[:40])
    assert counts["crashes"] == counts["hangs"] == counts["partial_files"] == counts["accepted_wrong"] == 0


CORRUPT_SCRIPT = r"""
import json, sys, io, contextlib
from msat_lava import cli
results = []
for path in sys.argv[2:]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = cli.main(["info", path, "--json"])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = "crash: %s: %s" % (type(exc).__name__, exc)
    results.append([path, code, err.getvalue()])
open(sys.argv[1], "w").write(json.dumps(results))
"""


def _corrupted_files(root: Path, bases, work: Path) -> dict:
    rng = np.random.default_rng(13)
    paths = []
    for base in ("zoo", "chain"):
        data = bases[base]["path"].read_bytes()
        for k, cut in enumerate((0, 8, 512, len(data) // 3, len(data) // 2, len(data) - 100)):
            p = work / f"trunc_{base}_{k}.net"
            p.write_bytes(data[:cut])
            paths.append(p)
        for k in range(8):
            raw = bytearray(data)
            for off in rng.integers(0, len(raw), size=4):
                raw[off] ^= 0xFF
            p = work / f"flip_{base}_{k}.net"
            p.write_bytes(bytes(raw))
            paths.append(p)
    out = work / "corrupt.json"
    proc = subprocess.run([sys.executable, "-c", CORRUPT_SCRIPT, str(out), *map(str, paths)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    counts: Counter = Counter()
    problems = []
    if proc.returncode != 0 or not out.exists():
        counts["crashes"] += len(paths)
        problems.append(f"corruption subprocess died ({proc.returncode}): {proc.stderr[-500:]}")
        return {"counts": counts, "problems": problems, "generated": len(paths)}
    for path, code, err in json.loads(out.read_text()):
        if code == 0:
            counts["accepted_equal"] += 1  # a flip in unused bytes (free space, padding) reads the same network
            from netx_export import hdf5

            base = "zoo" if "_zoo_" in path else "chain"
            if hdf5.read(path) != hdf5.read(bases[base]["path"]):
                counts["accepted_equal"] -= 1
                counts["accepted_wrong"] += 1
                problems.append(f"{path}: corrupted file accepted as another network")
        elif code == 2:
            counts["refused"] += 1
            lines = [line for line in err.strip().splitlines() if line]
            if len(lines) != 1 or path not in lines[0]:
                counts["refusals_badly_named"] += 1
                problems.append(f"{path}: refusal message: {err[:300]}")
        else:
            counts["crashes"] += 1
            problems.append(f"{path}: exit {code}: {err[-300:]}")
    for p in paths:
        p.unlink()
    out.unlink()
    return {"counts": counts, "problems": problems, "generated": len(paths)}


def _npz_cases(d: Path, shape: tuple) -> dict[str, Path]:
    rng = np.random.default_rng(2)
    n = 4
    x = rng.normal(size=(n,) + shape).astype(np.float32)
    cases = {}

    def save(name, **arrays):
        p = d / f"{name}.npz"
        np.savez(p, **arrays)
        cases[name] = p

    save("nan", x=np.where(x > 1, np.nan, x))
    save("inf", x=np.where(x > 1, np.inf, x))
    save("huge-float64", x=x.astype(np.float64) * 1e300)
    save("big-float32", x=x * 1e30)  # finite: clipped and reported
    save("wrong-shape", x=rng.normal(size=(n, 5, 5)).astype(np.float32))
    save("one-d", x=np.zeros(4, np.float32))
    save("empty", x=np.zeros((0,) + shape, np.float32))
    save("labels-99", x=x, y=np.full(n, 99))
    save("labels-uint64", x=x, y=np.full(n, 1 << 63, dtype=np.uint64))
    save("labels-negative", x=x, y=np.full(n, -1))
    save("labels-float", x=x, y=np.full(n, 0.5))
    save("labels-shape", x=x, y=np.zeros(n + 1, np.int64))
    save("no-x", z=x)
    save("strings", x=np.array(["a", "b"]))
    save("complex", x=x.astype(np.complex64))
    save("bool", x=x > 0)
    arr = np.empty(2, dtype=object)
    arr[:] = [1, "two"]
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=True)
    for name, payload in (("object", buf.getvalue()),
                          ("lying-header", _npy_header((1 << 40,) + shape) + b"\0" * 64),
                          ("short-header", _npy_header(shape)[:20])):
        p = d / f"{name}.npz"
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("x.npy", payload)
        cases[name] = p
    good = d / "good.npz"
    np.savez(good, x=x)
    raw = good.read_bytes()
    (d / "truncated.npz").write_bytes(raw[: len(raw) // 2])
    cases["truncated"] = d / "truncated.npz"
    (d / "not-zip.npz").write_text("hello")
    cases["not-zip"] = d / "not-zip.npz"
    (d / "zero-bytes.npz").write_bytes(b"")
    cases["zero-bytes"] = d / "zero-bytes.npz"
    np.save(d / "plain.npy", x)
    cases["plain-npy"] = d / "plain.npy"
    (d / "adir.npz").mkdir()
    cases["directory"] = d / "adir.npz"
    cases["missing"] = d / "missing.npz"
    return cases


def _npy_header(shape) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": tuple(shape)})
    return buf.getvalue()


def test_data_file_corpus(corpus):
    root, bases = corpus
    b = bases["chain"]
    d = root / "npz"
    d.mkdir()
    cases = _npz_cases(d, (2, 6, 5))
    counts: Counter = Counter()
    problems = []
    before = set(os.listdir(d))
    for name, path in cases.items():
        counts["generated"] += 1
        pred = root / "npz_pred.npz"
        code, out, err, preds = _run_cli(["run", str(b["path"]), "--data", str(path), "--steps", "3", "--json"], pred)
        if code == 0:
            counts["accepted"] += 1
            if name == "big-float32" and json.loads(out)["input_clipped"] == 0:
                problems.append(f"{name}: clipping not reported")
        elif code == 2:
            counts["refused"] += 1
            bad = _check_refusal(err, path, need_field=False)
            if bad:
                counts["refusals_badly_named"] += 1
                problems.append(f"{name}: refusal message {bad}: {err.strip()[:300]}")
            if pred.exists():
                counts["partial_files"] += 1
        elif code == "hang":
            counts["hangs"] += 1
            problems.append(f"{name}: hang")
        else:
            counts["crashes"] += 1
            problems.append(f"{name}: exit {code}: {err.strip()[-300:]}")
    if set(os.listdir(d)) != before:
        counts["partial_files"] += 1
    print("\nhostile data corpus:", dict(counts))
    _record("data_files", dict(counts))
    assert counts["accepted"] == 1  # only the finite out-of-range one, clipped and reported
    assert not problems, "\n".join(problems)
    assert counts["crashes"] == counts["hangs"] == counts["partial_files"] == 0


def test_model_file_corpus(tmp_path):
    import torch
    import torch.nn as nn
    from test_safe_load import (PT2_CASES, _legacy_format, _pickle_payload, _rewrite_zip, _torch_payload)

    (tmp_path / "tiny_model.py").write_text("import torch.nn as nn\n\ndef make():\n    return nn.Sequential("
                                            "nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))\n")
    np.savez(tmp_path / "data.npz", x=np.random.default_rng(0).normal(size=(12, 4)).astype(np.float32))
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).eval()
    torch.export.save(torch.export.export(model, (torch.randn(2, 4),)), tmp_path / "good.pt2")
    marker = tmp_path / "MARKER"
    files: dict[str, tuple[str, Path]] = {}
    for name, edit in PT2_CASES.items():
        p = tmp_path / f"{name}.pt2"
        _rewrite_zip(tmp_path / "good.pt2", p, edit(marker))
        files[name] = ("--exported", p)
    _legacy_format(tmp_path / "legacy.pt2", marker)
    files["legacy"] = ("--exported", tmp_path / "legacy.pt2")
    for name, payload in (("pickle", _pickle_payload(marker)), ("torch-save", _torch_payload(marker))):
        (tmp_path / f"{name}.pt2").write_bytes(payload)
        files[f"pt2-{name}"] = ("--exported", tmp_path / f"{name}.pt2")
        (tmp_path / f"{name}.pt").write_bytes(payload)
        files[f"weights-{name}"] = ("--weights", tmp_path / f"{name}.pt")
    torch.save({"0.weight": torch.zeros(7, 7)}, tmp_path / "shape.pt")
    files["weights-shape"] = ("--weights", tmp_path / "shape.pt")
    torch.save([1, 2, 3], tmp_path / "list.pt")
    files["weights-list"] = ("--weights", tmp_path / "list.pt")
    counts: Counter = Counter()
    problems = []
    for name, (option, path) in files.items():
        counts["generated"] += 1
        src = ["--exported", str(path)] if option == "--exported" else ["--model", f"{tmp_path}/tiny_model.py:make",
                                                                        "--weights", str(path)]
        out = tmp_path / "out.net"
        code, _, err = _call(["convert", *src, "--data", str(tmp_path / "data.npz"), "--out", str(out), "--quiet",
                              "--method", "const", "--calib-samples", "8"])
        if code == 2:
            counts["refused"] += 1
            bad = _check_refusal(err, path, need_field=False)
            if bad:
                problems.append(f"{name}: {bad}: {err[:300]}")
        else:
            counts["crashes" if code != 0 else "accepted"] += 1
            problems.append(f"{name}: exit {code}: {err[-300:]}")
        if out.exists():
            counts["partial_files"] += 1
        if marker.exists():
            counts["payloads_run"] += 1
            problems.append(f"{name}: the payload ran")
            marker.unlink()
    print("\nhostile model corpus:", dict(counts))
    _record("model_files", dict(counts))
    assert not problems, "\n".join(problems)
    assert counts["refused"] == counts["generated"]


# ---------------------------------------------------------------------------------------------------------
# peak memory
# ---------------------------------------------------------------------------------------------------------

PEAK_SCRIPT = r"""
import io, contextlib, resource, sys
from msat_lava import cli
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    try:
        code = cli.main(sys.argv[1:])
    except SystemExit as exc:
        code = exc.code
# VmHWM: this process image's peak RSS (ru_maxrss would carry the forking parent's peak across exec)
hwm = [int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")]
print(code, hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def _peak(argv: list[str]) -> tuple[int, int]:
    proc = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, *argv], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    code, rss = proc.stdout.strip().rsplit(" ", 1)
    return int(code), int(rss)


def test_peak_memory_of_hostile_files(corpus):
    """Peak RSS of ``info`` (no torch: sensitive to what the reader allocates) and ``run`` on hostile files
    derived from the valid ``chain`` file, each in a fresh process: under 2x the valid file's."""
    root, bases = corpus
    b = bases["chain"]
    d = root / "mem"
    d.mkdir()
    hostile = {}
    for name, mutate in (("huge-declared-weight", lambda f: m_huge(f, "msat/graph/4/weight")),
                         ("huge-declared-lut-like", lambda f: m_huge(f, "msat/targets/1/bias")),
                         ("huge-stored-weight", lambda f: _structural(f, "huge-real", "msat/graph/4/weight")),
                         ("huge-stored-names", lambda f: _recreate(
                             f, "msat/report/warnings", np.array(["w" * 64] * 40000, dtype=object),
                             dtype=h5py.string_dtype(), compression="gzip"))):
        p = d / f"{name}.net"
        shutil.copyfile(b["path"], p)
        with h5py.File(p, "r+") as f:
            mutate(f)
        hostile[name] = p
    figures: dict[str, dict[str, int]] = {"info": {}, "run": {}}
    run_args = ["--data", str(b["data"]), "--steps", "4", "--json"]
    code, figures["info"]["valid"] = _peak(["info", str(b["path"]), "--json"])
    assert code == 0
    code, figures["run"]["valid"] = _peak(["run", str(b["path"]), *run_args])
    assert code == 0
    for k, (name, p) in enumerate(hostile.items()):
        code, figures["info"][name] = _peak(["info", str(p), "--json"])
        assert code == 2, name
        if k % 2 == 0:
            code, figures["run"][name] = _peak(["run", str(p), *run_args])
            assert code == 2, name
    print("\npeak RSS (KiB):", figures)
    _record("peak_rss_kib", figures)
    for command, values in figures.items():
        for name, rss in values.items():
            assert rss < 2 * values["valid"], (command, name, rss, values["valid"])


def _record(key: str, value) -> None:
    target = os.environ.get("MSAT_HOSTILE_COUNTS")
    if not target:
        return
    data = json.loads(Path(target).read_text()) if Path(target).exists() else {}
    data[key] = value
    Path(target).write_text(json.dumps(data, indent=1))
