"""Every error exit of every ``msat-lava`` subcommand (issue 16, acceptance 2): the exit code, exactly one line on
stderr (no traceback without ``--debug``) and that line naming the offending file / layer / field / argument.

Exit codes (README, ``msat_lava.cli_common``): 0 ok; **1** verification failed (``verify`` mismatch, ``demo``
mismatch), the plan breaks a Loihi 2 limit (``deploy``), ``doctor`` failed, or an internal error (an exception that
is not a bad-input error: one line ``TypeName: message``); **2** bad input: arguments, files, data, models,
destinations; **130** interrupted; **141** stdout's reader closed the pipe (silent). A bad command line is one line from :class:`msat_lava.cli_common.Parser` (no
usage block, no abbreviations).

Inventory. "here" = a case of this file (the id is the pytest id); otherwise the test that covers the path one for
one. Paths: P = parser (argparse, ``type=`` validators of ``cli_common`` / ``cli_*``), M = ``cli.main``,
D = output destinations (``cli_common.check_destination``), then per command.

Each row (74 paths): id, exit code, command(s): the path; then where it is tested.

P1   2    (none): no command. Tested: here ``no-command``
P2   2    (none): unknown command. Tested: here ``unknown-command``
P3   2    every: unknown option; an abbreviation (``eval --calib``) names the options it may have meant. Tested: here
          ``unknown-*``, ``abbrev-*``, test_every_parser_refuses_abbreviations
P4   2    every: missing required option / positional. Tested: here ``required-*``
P5   2    convert: exclusive group (--model / --exported / --nir). Tested: here ``exclusive-model-nir``
P6   2    every: invalid choice (--method, --backend, --precision, ..). Tested: here ``choice-*``
P7   2    run/verify/eval/demo/..: positive_int (--samples, --threads, --sin-batch, ..). Tested: here ``positive-*``
P8   2    convert/eval/demo: seed_arg (--seed, --calib-seed). Tested: test_cli_hardening::test_bad_arguments_exit_2
P9   2    run/verify/eval/demo/..: steps_arg (--steps, --verify-steps, --check-steps). Tested:
          test_cli_hardening::test_bad_arguments_exit_2, here ``steps-deploy``
P10  2    run/verify/eval: _steps_list (--report-steps). Tested: here ``report-steps-text``, test_cli_hardening (range)
P11  2    convert: _burst_arg (--burst). Tested: test_cli_hardening::test_bad_arguments_exit_2
P12  2    deploy: _override (--set KEY=VALUE syntax, VALUE type). Tested: here ``set-syntax``, ``set-value``
P13  2    convert/run/..: float / int (--input-scale, --v-init, --seconds, --record). Tested: here ``float-*``,
          ``int-record``
P14  2    convert: positive_int --calib-samples. Tested: here ``positive-calib-samples``
M1   2    convert/eval: --config FILE.toml (unknown key, type, size, TOML). Tested:
          test_cli_config::test_bad_config_exit_2_one_line, ::test_oversized_not_utf8_and_missing_config
M2   2    every: a bad-input error escaping a handler (BadInput, DataError, NetxExportError) -> error_line. Tested:
          every case below
M3   2    every: OSError escaping a handler (names the file). Tested: here test_oserror_exit_2
M4   1    every: any other exception -> "TypeName: message". Tested: here test_internal_error_exit_1
M5   130  every: KeyboardInterrupt. Tested: here test_interrupt_exit_130
M5b  141  every: stdout's reader closed the pipe (``... --json | head``): no message. Tested: here
          test_broken_pipe_exit_141_silently, test_broken_pipe_in_a_real_pipe
M6   1/n  every: SystemExit(0) from a handler / SystemExit(n). Tested: here test_stray_system_exit
M7   2    every: --debug / MSAT_LAVA_DEBUG adds the traceback. Tested:
          test_cli_config::test_debug_after_a_subcommand_shows_the_traceback
D1   2    convert/run/verify/...: destination's directory missing. Tested: test_cli_hardening (convert, run); here
          ``dest-predictions-missing-dir``, ``dest-report-missing-dir``, ``dest-deploy-missing-dir``,
          ``dest-nir-missing-dir``
D2   2    convert: destination is a directory. Tested:
          test_cli_hardening::test_convert_destination_checked_before_working
D3   2    convert/run/verify/nir: destination exists without --overwrite. Tested: test_cli_hardening; here
          ``dest-nir-exists``
D4   2    convert: destination not writable. Tested: test_cli_hardening::test_read_only_destination
D5   2    eval: --out is a file / holds foreign files. Tested: here ``eval-out-file``,
          test_cli_hardening::test_eval_out_with_foreign_files_is_refused
D6   2    demo: --out exists and is not a directory. Tested: here ``demo-out-file``
C1   2    convert: --burst-scaled with a non-const --method. Tested: test_cli_hardening::test_convert_burst_scaled
C2   2    convert: --weights with --nir / with --exported. Tested: here ``convert-weights-nir``,
          ``convert-weights-exported``
C3   2    convert: --nir missing / not a NIR file. Tested: here ``convert-nir-*``
C4   2    convert: --exported missing / not an archive / pickles. Tested: here ``convert-exported-*``, test_safe_load
          (payloads)
C5   2    convert: --model spec / file / import / attribute / callable / factory raises or exits / not an nn.Module.
          Tested: here ``convert-model-*``
C6   2    convert: --weights missing / not a state_dict / would unpickle / wrong keys / wrong shapes. Tested: here
          ``convert-weights-*``, test_safe_load (payloads)
C7   2    convert: --data: no file / not .npz / no key / not numeric / empty / NaN / beyond float32 (msat_lava.data).
          Tested: here test_every_command_reads_npz_through_msat_lava_data, test_cli_hardening
C8   2    convert/run: --input-scale / --norm-mean / --norm-std: the values and their text. Tested: here
          test_norm_messages_name_the_option_everywhere, ``run-norm-text``, test_cli_hardening
C9   2    convert: --param syntax / model without / bad value. Tested: here ``convert-param-*``
C10  2    convert: --sc-p syntax / P out of (0, 1] / unknown layer. Tested: here ``convert-sc-p-*``
C11  2    convert: --v-init out of [0, 1) / --percentile out of (0, 100]. Tested: here ``convert-v-init``,
          ``convert-percentile``
C12  2    convert: the model does not take the data's samples. Tested: here ``convert-data-shape``
C13  2    convert: unsupported nodes (all listed, one message). Tested:
          test_cli_hardening::test_unsupported_error_lists_a_batchnorm_after_a_flatten_of_a_bad_chain
I1   2    info: missing / not HDF5 / not a network file / damaged msat-lava or netx file (names the field). Tested:
          here ``info-*``, test_netx_peer_cli::test_corrupted_netx_file_exit_2, test_hdf5
R1   2    run: NET missing / not a network file. Tested: test_cli_run::test_bad_input_exit_2
R2   2    run/verify: --data problems (keys, shape, --norm-mean count). Tested: test_cli_run::test_bad_input_exit_2,
          test_cli_hardening, here test_every_command_reads_npz_through_msat_lava_data
R3   2    run/verify: labels (shape, dtype, range, num classes). Tested:
          test_cli_hardening::test_bad_labels_are_refused, here ``run-label-count``
R4   2    run/verify: --report-steps beyond --steps. Tested: test_cli_run::test_bad_input_exit_2, here
          ``verify-report-steps``
R5   2    run/verify: netx-only option on an msat-lava file. Tested:
          test_netx_peer_cli::test_netx_only_options_refused_on_msat_file, here ``run-state-msat``
R6   2    run: backend cannot run it (loihi2 without lava-loihi). Tested: here ``run-backend-loihi2``
R7   2    run/verify (netx file): options without meaning, bad bias files, corrupted file. Tested:
          test_netx_peer_cli::test_options_without_meaning_are_refused, ::test_bad_bias_files_are_refused,
          ::test_corrupted_netx_file_exit_2
R8   2    run (netx file): --record out of range / --state without --predictions. Tested: here ``netx-run-record``,
          ``netx-run-state``
V1   1    verify: Lava and the reference differ (names the stage). Tested: here test_verify_mismatch_exit_1,
          test_cli_run::test_verify_exit_1_on_mismatch (Lava), test_netx_peer_cli (netx file)
V2   2    verify --against: missing / not .npz / unexpected or missing member / unknown stage / index beyond --data.
          Tested: here ``against-*``, test_deploy_against
V3   1    verify --against: the recorded run differs. Tested: test_deploy_against::test_cli_against_exit_codes
V4   2    verify (netx file): Lava not installed. Tested: here test_verify_netx_without_lava
DM1  2    demo: --verify-steps beyond --steps. Tested: here ``demo-verify-steps``
DM2  1    demo: Lava and the reference differ. Tested: here test_demo_mismatch_exit_1
E1   2    eval: --data without labels. Tested: here ``eval-no-labels``
E2   2    eval: --calib-data without images / unreadable. Tested: here ``eval-calib-*``
E3   2    eval: --methods grammar / a model parameter. Tested: here ``eval-methods-*``
E4   2    eval: --preset unknown. Tested: here ``eval-preset``
E5   2    eval: --sc-layers unknown layer / --sc-window > 256. Tested: here ``eval-sc-*``
E6   2    eval: --lambda-from data without a training split. Tested: here ``eval-lambda-from``
E7   2    eval: percentile method without calibration images. Tested: here ``eval-percentile-no-calib``
DP1  2    deploy: --run without --data / --predictions without --run. Tested: here ``deploy-run-no-data``,
          ``deploy-predictions-no-run``, test_deploy
DP2  2    deploy: --constraints missing / not JSON / not an object / unknown key / bad value. Tested: here
          ``deploy-constraints-*``, test_deploy::test_deploy_bad_input_exit_2_one_line
DP3  2    deploy: --set unknown constraint / bad value. Tested: here ``deploy-set-*``
DP4  2    deploy: NET / --data unreadable. Tested: here ``deploy-net-missing``,
          test_every_command_reads_npz_through_msat_lava_data,
          test_deploy::test_deploy_unreadable_network_exit_2
DP5  1    deploy: violations (one stderr line, the first violation). Tested: here ``deploy-violations``,
          test_deploy::test_deploy_exit_1_lists_every_violation
DP6  2    deploy --run: Loihi 2 cannot run it here (without --sim). Tested: here ``deploy-run-no-loihi``,
          test_deploy::test_without_lava_loihi_run_points_to_inrc_and_sim_is_explicit
N1   2    export-nir: NET missing. Tested: here ``nir-net-missing``
N2   2    export-nir: a layer NIR cannot express. Tested: here ``nir-msat-layer``
N3   2    export-nir: --out missing directory / exists. Tested: here ``dest-nir-*``
X1   2    netx-run: NET missing / an msat-lava file. Tested: here ``netx-run-missing``, ``netx-run-msat-file``
X2   2    netx-run: --bias missing / --state without --out / --record out of range / --out destination. Tested: here
          ``netx-run-*``
DR1  1    doctor: the tiny Lava run fails. Tested: here test_doctor_failure_exit_1

Library errors behind the paths: :class:`msat_lava.data.DataError` (file, key), :class:`netx_export.errors.FormatError`
(file, layer, field), ``GraphError`` (node, field; C12), ``UnsupportedOpError`` (C13), ``CalibrationError``,
``QuantizationError`` (layer, field; C10 unknown layer), ``NeuronSpecError`` (C9), ``NirError`` (layer; C3, N2),
``FileExistsRefusedError`` / ``DestinationError`` (checked earlier by D1-D4), :class:`msat_lava.backends.BackendError`
(R6, DP6, V4), :class:`msat_lava.loihi2.constraints.ConstraintsError` (DP2, DP3).

Also here: every command that reads an ``.npz`` reads it through :mod:`msat_lava.data` (the same messages for the same
bad file; an ``x``-only file is calibration data for ``convert --data`` and ``eval --calib-data`` and input data for
``run``), and no command writes into the working directory unless asked.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import _nets
from msat_lava import cli

pytestmark = [pytest.mark.timeout(300), pytest.mark.usefixtures("one_torch_thread")]

TINY = Path(os.environ.get("MSAT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")) \
    / "netx_peer" / "tinynet"

MODEL = '''import sys
import torch, torch.nn as nn


def make():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def bad():
    raise RuntimeError("boom")


def leave():
    sys.exit(0)


def lst():
    return [1]


notcallable = 3
'''


@pytest.fixture(scope="module")
def d(tmp_path_factory) -> Path:
    """Networks (TinyMLP 6 -> 5 -> 3, const and msat), a model file, weights and good and bad data files."""
    import torch

    root = tmp_path_factory.mktemp("errpaths")
    _nets.convert("mlp", "const").net.save(root / "const.net")
    _nets.convert("mlp", "msat").net.save(root / "msat.net")
    (root / "m.py").write_text(MODEL)
    torch.manual_seed(0)
    make = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))
    state = make.state_dict()
    torch.save(state, root / "w.pt")
    torch.save({**state, "extra": torch.zeros(1)}, root / "wextra.pt")
    torch.save({**state, "0.weight": torch.zeros(4, 6)}, root / "wshape.pt")
    torch.save([1, 2], root / "wlist.pt")
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (10, 6)).astype(np.float32)
    np.savez(root / "data.npz", x=x, y=np.arange(10) % 3)
    np.savez(root / "xonly.npz", x=x)
    np.savez(root / "tt.npz", x_train=x, y_train=np.arange(10) % 3, x_test=x[:4], y_test=np.arange(4) % 3)
    np.savez(root / "nokey.npz", images=x)
    np.savez(root / "nan.npz", x=np.full((3, 6), np.nan, np.float32))
    np.savez(root / "empty.npz", x=np.zeros((0, 6), np.float32))
    np.savez(root / "boolx.npz", x=np.ones((3, 6), bool))
    np.savez(root / "huge.npz", x=np.full((3, 6), 1e300))
    np.savez(root / "wrongshape.npz", x=np.zeros((4, 7), np.float32))
    np.savez(root / "badlab.npz", x=x[:3], y=np.zeros(4, np.int64))
    np.save(root / "arr.npy", x)
    (root / "garbage.bin").write_text("not any format at all")
    np.savez(root / "rec_beyond.npz", predictions=np.zeros((3, 2), np.int64), indices=np.array([0, 50]))
    np.savez(root / "rec_extra.npz", predictions=np.zeros((3, 2), np.int64), indices=np.array([0, 1]),
             foo=np.zeros(1))
    np.savez(root / "rec_stage.npz", predictions=np.zeros((3, 2), np.int64), indices=np.array([0, 1]),
             trace_nostage=np.zeros(1))
    np.savez(root / "rec_noidx.npz", predictions=np.zeros((3, 2), np.int64))
    (root / "cbad.json").write_text('{"chips": -1}')
    (root / "clist.json").write_text("[1]")
    (root / "cunk.json").write_text('{"nope": 1}')
    (root / "cjson.json").write_text("{")
    (root / "exists.nir").write_text("old")
    (root / "adir").mkdir()
    return root


def _call(argv: list[str]) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of ``msat-lava argv`` in this process; argparse's SystemExit is the code."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err and "usage:" not in err, err
    return lines[0]


@pytest.fixture(autouse=True)
def _no_debug():
    """main() sets MSAT_LAVA_DEBUG for --debug: every test starts and ends without it."""
    old = os.environ.pop("MSAT_LAVA_DEBUG", None)
    yield
    os.environ.pop("MSAT_LAVA_DEBUG", None)
    if old is not None:
        os.environ["MSAT_LAVA_DEBUG"] = old


# ---------------------------------------------------------------------------------------------------------
# the table: (id, argv, exit code, words the one stderr line must contain); {d} = the fixture directory,
# {tiny} = the shared data's plain netx network (those cases skip without it)
# ---------------------------------------------------------------------------------------------------------
CONVERT = "convert --quiet --out {d}/o.net"
MODEL_ARGS = "--model {d}/m.py:make"
C_DATA = f"{CONVERT} {MODEL_ARGS} --data"
RUN = "run {d}/const.net --steps 2 --data"
EVAL = "eval {d}/const.net --steps 2 --methods const --out {d}/ev --data {d}/data.npz"
DEPLOY = "deploy {d}/const.net"
T = "{tiny}/tiny.net"
BIAS = "{tiny}/input_bias.npy"

CASES = [
    # P: the command line
    ("no-command", "", 2, ["msat-lava: error: no command given", "convert"]),
    ("unknown-command", "nocommand", 2, ["msat-lava: error:", "'nocommand'"]),
    ("unknown-top-option", "--bogus", 2, ["msat-lava: error:", "--bogus"]),
    ("unknown-run-option", f"{RUN} {{d}}/data.npz -x", 2, ["msat-lava run: error:", "unrecognized", "-x"]),
    ("abbrev-eval-calib", "eval {d}/const.net --data {d}/data.npz --steps 2 --calib {d}/tt.npz", 2,
     ["msat-lava eval: error:", "--calib", "--calib-data", "--calib-samples", "not abbreviated"]),
    ("abbrev-convert-calib", f"{C_DATA} {{d}}/data.npz --calib 5", 2,
     ["msat-lava convert: error:", "--calib ", "--calib-samples"]),
    ("abbrev-run-step", f"{RUN} {{d}}/data.npz --step 3", 2, ["msat-lava run: error:", "--step", "--steps"]),
    ("required-run-data", "run {d}/const.net --steps 2", 2, ["msat-lava run: error:", "--data"]),
    ("required-run-net", "run --data {d}/data.npz --steps 2", 2, ["msat-lava run: error:", "NET"]),
    ("required-convert-out", "convert --model m:f --data d.npz", 2, ["msat-lava convert: error:", "--out"]),
    ("required-convert-model", "convert --data d.npz --out o.net", 2,
     ["msat-lava convert: error:", "--model", "--exported", "--nir"]),
    ("required-eval-steps", "eval n.net --data d.npz", 2, ["msat-lava eval: error:", "--steps"]),
    ("exclusive-model-nir", "convert --model m:f --nir x.nir --data d.npz --out o.net", 2,
     ["msat-lava convert: error:", "--nir", "--model"]),
    ("choice-method", f"{C_DATA} d.npz --method nope", 2, ["argument --method", "'nope'"]),
    ("choice-backend", f"{RUN} d.npz --backend nope", 2, ["argument --backend", "'nope'"]),
    ("choice-precision", "eval n.net --data d.npz --steps 2 --precision half", 2, ["argument --precision", "'half'"]),
    ("choice-split", f"{RUN} d.npz --split val", 2, ["argument --split", "'val'"]),
    ("choice-preset", f"{C_DATA} d.npz --preset xx", 2, ["argument --preset", "'xx'"]),
    ("positive-samples", f"{RUN} d.npz --samples 0", 2, ["argument --samples", "'0'"]),
    ("positive-threads", f"{RUN} d.npz --threads -1", 2, ["argument --threads", "'-1'"]),
    ("positive-sin-batch", "eval n.net --data d.npz --steps 2 --sin-batch 0", 2, ["argument --sin-batch"]),
    ("positive-calib-samples", f"{C_DATA} d.npz --calib-samples 0", 2, ["argument --calib-samples", "'0'"]),
    ("positive-reset-interval", f"{RUN} d.npz --reset-interval 0", 2, ["argument --reset-interval"]),
    ("steps-deploy", "deploy n.net --check-steps 0", 2, ["argument --check-steps", "'0'"]),
    ("report-steps-text", f"{RUN} d.npz --report-steps x", 2, ["argument --report-steps", "'x'"]),
    ("set-syntax", "deploy n.net --set chips", 2, ["argument --set", "'chips'", "KEY=VALUE"]),
    ("set-value", "deploy n.net --set chips=x", 2, ["argument --set", "'chips=x'", "integer"]),
    ("float-input-scale", f"{C_DATA} d.npz --input-scale x", 2, ["argument --input-scale", "'x'"]),
    ("float-v-init", f"{C_DATA} d.npz --v-init half", 2, ["argument --v-init", "'half'"]),
    ("float-seconds", "demo --seconds x", 2, ["argument --seconds", "'x'"]),
    ("int-record", f"{RUN} d.npz --record a", 2, ["argument --record", "'a'"]),
    # D: destinations checked before any work
    ("dest-predictions-missing-dir", f"{RUN} {{d}}/data.npz --predictions {{d}}/no/p.npz", 2,
     ["--predictions", "/no/p.npz", "does not exist"]),
    ("dest-report-missing-dir", "verify {d}/const.net --data {d}/data.npz --report {d}/no/r.json", 2,
     ["--report", "/no/r.json", "does not exist"]),
    ("dest-deploy-missing-dir", f"{DEPLOY} --run --data {{d}}/data.npz --predictions {{d}}/no/p.npz", 2,
     ["--predictions", "/no/p.npz", "does not exist"]),
    ("dest-nir-missing-dir", "export-nir {d}/const.net --out {d}/no/o.nir", 2,
     ["--out", "/no/o.nir", "does not exist"]),
    ("dest-nir-exists", "export-nir {d}/const.net --out {d}/exists.nir", 2, ["--out", "exists.nir", "--overwrite"]),
    ("dest-nir-directory", "export-nir {d}/const.net --out {d}/adir", 2, ["--out", "adir", "is a directory"]),
    ("eval-out-file", "eval {d}/const.net --data {d}/data.npz --steps 2 --out {d}/data.npz", 2,
     ["--out", "data.npz", "not a directory"]),
    ("demo-out-file", "demo --out {d}/data.npz", 2, ["--out", "data.npz", "not a directory"]),
    # convert: the model
    ("convert-weights-nir", f"{CONVERT} --nir {{d}}/x.nir --weights {{d}}/w.pt --data {{d}}/data.npz", 2,
     ["--weights", "--nir"]),
    ("convert-weights-exported", f"{CONVERT} --exported {{d}}/garbage.bin --weights {{d}}/w.pt --data {{d}}/data.npz",
     2, ["--weights", "--exported"]),
    ("convert-nir-missing", f"{CONVERT} --nir {{d}}/missing.nir --data {{d}}/data.npz", 2,
     ["missing.nir", "no such file"]),
    ("convert-nir-garbage", f"{CONVERT} --nir {{d}}/garbage.bin --data {{d}}/data.npz", 2, ["garbage.bin", "HDF5"]),
    ("convert-exported-missing", f"{CONVERT} --exported {{d}}/missing.pt2 --data {{d}}/data.npz", 2,
     ["missing.pt2", "does not exist"]),
    ("convert-exported-garbage", f"{CONVERT} --exported {{d}}/garbage.bin --data {{d}}/data.npz", 2,
     ["garbage.bin", "not a torch.export archive"]),
    ("convert-model-spec", f"{CONVERT} --model nocolon --data {{d}}/data.npz", 2, ["--model", "'nocolon'"]),
    ("convert-model-file", f"{CONVERT} --model {{d}}/nosuch.py:make --data {{d}}/data.npz", 2,
     ["nosuch.py", "does not exist"]),
    ("convert-model-import", f"{CONVERT} --model no_such_module_xyz:make --data {{d}}/data.npz", 2,
     ["cannot import 'no_such_module_xyz'"]),
    ("convert-model-attribute", f"{CONVERT} --model {{d}}/m.py:nope --data {{d}}/data.npz", 2,
     ["m.py", "no attribute 'nope'"]),
    ("convert-model-not-callable", f"{CONVERT} --model {{d}}/m.py:notcallable --data {{d}}/data.npz", 2,
     ["m.py:notcallable", "not callable"]),
    ("convert-model-raises", f"{CONVERT} --model {{d}}/m.py:bad --data {{d}}/data.npz", 2,
     ["m.py:bad", "RuntimeError: boom"]),
    ("convert-model-exits", f"{CONVERT} --model {{d}}/m.py:leave --data {{d}}/data.npz", 2,
     ["m.py:leave", "SystemExit"]),
    ("convert-model-not-module", f"{CONVERT} --model {{d}}/m.py:lst --data {{d}}/data.npz", 2,
     ["m.py:lst", "list", "torch.nn.Module"]),
    ("convert-weights-missing", f"{C_DATA} {{d}}/data.npz --weights {{d}}/nosuch.pt", 2,
     ["nosuch.pt", "does not exist"]),
    ("convert-weights-list", f"{C_DATA} {{d}}/data.npz --weights {{d}}/wlist.pt", 2,
     ["wlist.pt", "list", "state_dict"]),
    ("convert-weights-extra-key", f"{C_DATA} {{d}}/data.npz --weights {{d}}/wextra.pt", 2,
     ["wextra.pt", "unexpected", "'extra'"]),
    ("convert-weights-shape", f"{C_DATA} {{d}}/data.npz --weights {{d}}/wshape.pt", 2,
     ["wshape.pt", "0.weight", "size mismatch"]),
    ("convert-weights-garbage", f"{C_DATA} {{d}}/data.npz --weights {{d}}/garbage.bin", 2,
     ["garbage.bin", "unpickling"]),
    # convert: options checked before any work
    ("convert-param-syntax", f"{C_DATA} {{d}}/data.npz --method dtif-r --param beta", 2, ["--param", "'beta'"]),
    ("convert-param-no-params", f"{C_DATA} {{d}}/data.npz --param beta=3", 2,
     ["--param", "'msat'", "no model parameters"]),
    ("convert-param-unknown", f"{C_DATA} {{d}}/data.npz --method dtif-r --param nope=3", 2,
     ["--param", "'dtif-r'", "'nope'"]),
    ("convert-param-value", f"{C_DATA} {{d}}/data.npz --method dtif-r --param beta=-3", 2,
     ["--param", "'beta'", "-3"]),
    ("convert-sc-p-syntax", f"{C_DATA} {{d}}/data.npz --sc-p foo", 2, ["--sc-p", "'foo'", "LAYER=P"]),
    ("convert-sc-p-range", f"{C_DATA} {{d}}/data.npz --sc-p _1=1.5", 2, ["--sc-p", "'_1'", "(0, 1]"]),
    ("convert-sc-p-layer", f"{C_DATA} {{d}}/data.npz --sc-p nolayer=0.5", 2, ["layer 'nolayer'", "sc_p"]),
    ("convert-v-init", f"{C_DATA} {{d}}/data.npz --v-init 1.5", 2, ["--v-init", "1.5", "v_init", "[0, 1)"]),
    ("convert-percentile", f"{C_DATA} {{d}}/data.npz --lambda percentile --percentile 120", 2,
     ["--percentile", "120", "(0, 100]"]),
    ("convert-data-shape", f"{C_DATA} {{d}}/wrongshape.npz", 2,
     ["--data", "wrongshape.npz", "(7,)", "do not fit the model"]),
    # info
    ("info-missing", "info {d}/missing.net", 2, ["missing.net", "no such file"]),
    ("info-garbage", "info {d}/garbage.bin", 2, ["garbage.bin", "not a readable HDF5 file"]),
    ("info-npz", "info {d}/data.npz", 2, ["data.npz", "HDF5"]),
    # run / verify
    ("run-label-count", f"{RUN} {{d}}/badlab.npz", 2, ["badlab.npz", "key 'y'", "(4,)", "(3,)"]),
    ("run-state-msat", f"{RUN} {{d}}/data.npz --state", 2, ["--state", "plain netx files only", "const.net"]),
    ("run-backend-loihi2", f"{RUN} {{d}}/data.npz --backend loihi2", 2, ["backend loihi2", "lava-loihi"]),
    ("run-norm-text", f"{RUN} {{d}}/data.npz --norm-std a", 2, ["--norm-std", "'a'"]),
    ("verify-report-steps", "verify {d}/const.net --data {d}/data.npz --steps 4 --report-steps 8", 2,
     ["--report-steps", "[8]", "--steps 4"]),
    ("against-missing", "verify {d}/const.net --data {d}/data.npz --against {d}/missing.npz", 2,
     ["missing.npz", "no such file"]),
    ("against-not-npz", "verify {d}/const.net --data {d}/data.npz --against {d}/garbage.bin", 2,
     ["garbage.bin", "not an .npz"]),
    ("against-beyond", "verify {d}/const.net --data {d}/data.npz --against {d}/rec_beyond.npz", 2,
     ["rec_beyond.npz", "key 'indices'", "50", "10 samples"]),
    ("against-extra", "verify {d}/const.net --data {d}/data.npz --against {d}/rec_extra.npz", 2,
     ["rec_extra.npz", "key 'foo'", "unexpected member"]),
    ("against-stage", "verify {d}/const.net --data {d}/data.npz --against {d}/rec_stage.npz", 2,
     ["rec_stage.npz", "'trace_nostage'", "no stage 'nostage'"]),
    ("against-no-indices", "verify {d}/const.net --data {d}/data.npz --against {d}/rec_noidx.npz", 2,
     ["rec_noidx.npz", "key 'indices'", "missing"]),
    # demo
    ("demo-verify-steps", "demo --steps 8 --verify-steps 40", 2, ["--verify-steps 40", "--steps 8"]),
    # eval (msat_lava.evaluate)
    ("eval-no-labels", "eval {d}/const.net --data {d}/xonly.npz --steps 2 --out {d}/ev", 2,
     ["xonly.npz", "labels"]),
    ("eval-calib-no-images", f"{EVAL} --calib-data {{d}}/nokey.npz", 2, ["nokey.npz", "--calib-data", "x_train"]),
    ("eval-calib-garbage", f"{EVAL} --calib-data {{d}}/garbage.bin", 2, ["garbage.bin", "--calib-data"]),
    ("eval-methods-unknown", "eval {d}/const.net --data {d}/data.npz --steps 2 --out {d}/ev --methods bogus", 2,
     ["--methods", "'bogus'"]),
    ("eval-methods-param", "eval {d}/const.net --data {d}/data.npz --steps 2 --out {d}/ev --methods dtif-r:beta=x",
     2, ["--methods", "dtif-r:beta=x"]),
    ("eval-preset", f"{EVAL} --preset nope", 2, ["--preset", "'nope'", "resnet20"]),
    ("eval-sc-layers", "eval {d}/const.net --data {d}/tt.npz --steps 2 --out {d}/ev --methods msat+sc "
     "--sc-layers nolayer", 2, ["--sc-layers", "'nolayer'", "relu"]),
    ("eval-sc-window", f"{EVAL} --sc-window 300", 2, ["--sc-window", "300", "1..256"]),
    ("eval-lambda-from", f"{EVAL} --lambda-from data", 2, ["--lambda-from data", "x_train", "data.npz"]),
    ("eval-percentile-no-calib", "eval {d}/const.net --data {d}/data.npz --steps 2 --out {d}/ev --methods p99.9",
     2, ["'p99.9'", "--calib-data"]),
    # deploy
    ("deploy-net-missing", "deploy {d}/missing.net", 2, ["missing.net", "no such file"]),
    ("deploy-run-no-data", f"{DEPLOY} --run", 2, ["--run", "--data"]),
    ("deploy-predictions-no-run", f"{DEPLOY} --predictions {{d}}/p.npz", 2, ["--predictions", "--run"]),
    ("deploy-constraints-missing", f"{DEPLOY} --constraints {{d}}/missing.json", 2,
     ["constraints file", "missing.json"]),
    ("deploy-constraints-bad-value", f"{DEPLOY} --constraints {{d}}/cbad.json", 2,
     ["cbad.json", "field 'chips'", "-1"]),
    ("deploy-constraints-not-object", f"{DEPLOY} --constraints {{d}}/clist.json", 2, ["clist.json", "JSON object"]),
    ("deploy-constraints-unknown", f"{DEPLOY} --constraints {{d}}/cunk.json", 2, ["cunk.json", "'nope'"]),
    ("deploy-constraints-not-json", f"{DEPLOY} --constraints {{d}}/cjson.json", 2, ["cjson.json"]),
    ("deploy-set-unknown", f"{DEPLOY} --set nope=3", 2, ["--set", "unknown constraint 'nope'"]),
    ("deploy-set-value", f"{DEPLOY} --set chips=0", 2, ["--set", "field 'chips'", "0"]),
    ("deploy-run-no-loihi", f"{DEPLOY} --run --data {{d}}/data.npz --set bias_mant_bits=14", 2,
     ["backend loihi2", "lava-loihi", "--sim"]),
    ("deploy-violations", f"{DEPLOY} --set state_bits=8", 1, ["msat-lava deploy:", "violation(s)", "layer 'relu'",
                                                               "state_bits 8"]),
    # export-nir
    ("nir-net-missing", "export-nir {d}/missing.net --out {d}/o.nir", 2, ["missing.net", "no such file"]),
    ("nir-msat-layer", "export-nir {d}/msat.net --out {d}/o.nir", 2, ["layer 'relu'", "msat", "--method const"]),
    # netx-run and run on a plain netx file
    ("netx-run-missing", "netx-run {d}/missing.net", 2, ["missing.net", "no such file"]),
    ("netx-run-msat-file", "netx-run {d}/const.net", 2, ["const.net", "field 'msat'"]),
    ("netx-run-bias-missing", f"netx-run {T} --bias {{d}}/missing.npy", 2, ["--bias", "missing.npy", "no such file"]),
    ("netx-run-state", f"netx-run {T} --bias {BIAS} --state", 2, ["--state", "--out"]),
    ("netx-run-record", f"netx-run {T} --bias {BIAS} --record 9", 2, ["--record 9", "0..2"]),
    ("netx-run-out-dir", f"netx-run {T} --bias {BIAS} --out {{d}}/no/x.npz", 2,
     ["--out", "/no/x.npz", "does not exist"]),
    ("netx-run-record-run", f"run {T} --data {BIAS} --steps 2 --record 9", 2, ["--record 9", "0..2"]),
    ("netx-run-state-run", f"run {T} --data {BIAS} --steps 2 --state", 2, ["--state", "--predictions"]),
]


@pytest.mark.parametrize("argv, code, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_path(d, argv, code, words):
    if "{tiny}" in argv and not (TINY / "tiny.net").is_file():
        pytest.skip(f"no plain netx network in {TINY}")
    got, out, err = _call(argv.format(d=d, tiny=TINY).split())
    assert got == code, err
    line = _one_line(err)
    prefix = f"msat-lava {argv.split()[0]}" if argv and not argv.startswith("-") else "msat-lava"
    if got == 2:
        assert line.startswith(f"{prefix}: error:") or line.startswith("msat-lava: error:"), line
    for word in words:
        assert word in line, (word, line)
    assert not (d / "o.net").exists() and not (d / "o.nir").exists() and not (d / "ev").exists()


def test_ids_are_unique_and_in_the_inventory():
    import re

    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids))
    doc = " ".join(__doc__.split())
    stars = re.findall(r"``([a-z0-9-]+)-\*``", doc)
    exact = set(re.findall(r"``([a-z0-9-]+)``", doc))
    for i in ids:
        assert i in exact or any(i.startswith(f"{star}-") for star in stars), i


# ---------------------------------------------------------------------------------------------------------
# parsers: no abbreviations anywhere
# ---------------------------------------------------------------------------------------------------------
def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = cli.build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {"msat-lava": parser, **subs}


def test_every_parser_refuses_abbreviations():
    from msat_lava import cli_convert
    from msat_lava.cli_common import Parser

    for name, p in _parsers().items():
        assert isinstance(p, Parser) and p.allow_abbrev is False, name
        longs = [s for s in p._option_string_actions if s.startswith("--") and len(s) > 4]
        for option in longs:  # a prefix of an option is no option: never silently expanded
            prefix = option[:-1]
            if prefix in p._option_string_actions:
                continue
            found = p._parse_optional(prefix)
            assert all(t is None or t[0] is None for t in (found if isinstance(found, list) else [found])), \
                (name, prefix)
    # the standalone convert/info entry (python -m msat_lava.cli_convert) uses the same parser class
    with pytest.raises(SystemExit) as info, contextlib.redirect_stderr(io.StringIO()) as err:
        cli_convert.main(["convert", "--model", "m:f", "--data", "d", "--out", "o", "--calib", "5"])
    assert info.value.code == 2 and "--calib" in _one_line(err.getvalue())


# ---------------------------------------------------------------------------------------------------------
# cli.main: what escapes a handler
# ---------------------------------------------------------------------------------------------------------
def _raising(exc: BaseException):
    def handler(args):
        raise exc
    return handler


def test_oserror_exit_2(d, monkeypatch):
    from msat_lava import cli_convert

    monkeypatch.setattr(cli_convert, "_cmd_info", _raising(PermissionError(13, "Permission denied", "/x/net.net")))
    code, _, err = _call(["info", str(d / "const.net")])
    assert code == 2
    line = _one_line(err)
    assert line.startswith("msat-lava info: error:") and "/x/net.net" in line and "Permission denied" in line


def test_internal_error_exit_1(d, monkeypatch):
    from msat_lava import cli_convert

    monkeypatch.setattr(cli_convert, "_cmd_info", _raising(ZeroDivisionError("a bug\nsecond line")))
    code, _, err = _call(["info", str(d / "const.net")])
    assert code == 1
    assert _one_line(err) == "msat-lava info: error: ZeroDivisionError: a bug"
    code, _, err = _call(["--debug", "info", str(d / "const.net")])
    assert code == 1 and "Traceback" in err and err.strip().endswith("ZeroDivisionError: a bug")


def test_interrupt_exit_130(d, monkeypatch):
    from msat_lava import cli_convert

    monkeypatch.setattr(cli_convert, "_cmd_info", _raising(KeyboardInterrupt()))
    code, _, err = _call(["info", str(d / "const.net")])
    assert code == 130 and _one_line(err) == "msat-lava info: interrupted"


def test_broken_pipe_exit_141_silently(d, monkeypatch):
    """A closed stdout is not bad input: exit 141 (128 + SIGPIPE), nothing on stderr."""
    from msat_lava import cli_convert

    monkeypatch.setattr(cli_convert, "_cmd_info", _raising(BrokenPipeError(32, "Broken pipe")))
    code, _, err = _call(["info", str(d / "const.net")])
    assert code == 141 and err == ""


def test_broken_pipe_in_a_real_pipe(d):
    """`msat-lava info NET --json` into a reader that has already closed its end: exit 141, no error line, no
    traceback from the interpreter's final flush."""
    import os
    import subprocess

    r, w = os.pipe()
    os.close(r)  # the reader is gone before the first write
    proc = subprocess.run([sys.executable, "-m", "msat_lava.cli", "info", str(d / "const.net"), "--json"],
                          stdout=w, stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(w)
    assert proc.returncode == 141 and proc.stderr == "", proc.stderr


def test_stray_system_exit(d, monkeypatch):
    from msat_lava import cli_convert

    monkeypatch.setattr(cli_convert, "_cmd_info", _raising(SystemExit(0)))
    code, _, err = _call(["info", str(d / "const.net")])
    assert code == 1 and "SystemExit(0)" in _one_line(err)
    monkeypatch.setattr(cli_convert, "_cmd_info", _raising(SystemExit(3)))
    assert _call(["info", str(d / "const.net")])[0] == 3


# ---------------------------------------------------------------------------------------------------------
# exit 1 paths
# ---------------------------------------------------------------------------------------------------------
class _Divergence:
    def describe(self) -> str:
        return "stage 'relu' (spikes) at step 3, sample 1, neuron (2,): lava 1, reference 0"


class _Report:
    bit_exact = False
    divergence = _Divergence()

    def format(self) -> str:
        return "MISMATCH\nfirst divergence: " + self.divergence.describe()

    def to_dict(self) -> dict:
        return {"bit_exact": False}


@pytest.mark.parametrize("json_flag", [[], ["--json"]], ids=["text", "json"])
def test_verify_mismatch_exit_1(d, monkeypatch, json_flag):
    """Lava's run is replaced by a report that differs: exit 1 and, text or JSON, one stderr line naming the stage."""
    module = importlib.import_module("msat_lava.verify")
    monkeypatch.setattr(module, "verify", lambda *a, **k: _Report())
    code, out, err = _call(["verify", str(d / "const.net"), "--data", str(d / "data.npz"), "--samples", "2",
                            "--steps", "4", "--quiet", *json_flag])
    assert code == 1, err
    assert _one_line(err) == f"msat-lava verify: MISMATCH: {_Divergence().describe()}"
    assert ("MISMATCH" in out) == (not json_flag)


def test_verify_netx_without_lava(monkeypatch):
    if not (TINY / "tiny.net").is_file():
        pytest.skip(f"no plain netx network in {TINY}")
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "lava" else real(name, *a))
    code, _, err = _call(["verify", str(TINY / "tiny.net"), "--data", str(TINY / "input_bias.npy"), "--steps", "2"])
    assert code == 2 and "lava-nc" in _one_line(err) and "not installed" in err


def test_demo_mismatch_exit_1(monkeypatch, tmp_path):
    from msat_lava import cli_run

    result = {"bit_exact": False, "first_divergence": _Divergence().describe()}
    monkeypatch.setattr(cli_run, "run_demo", lambda *a, **k: result)
    code, out, err = _call(["demo", "--out", str(tmp_path / "demo"), "--json"])
    assert code == 1 and json.loads(out) == result
    line = _one_line(err)
    assert line.startswith("msat-lava demo: FAILED: Lava and the reference differ") and "stage 'relu'" in line


def test_doctor_failure_exit_1(monkeypatch):
    import msat_lava.doctor  # noqa: F401

    class Failed:
        ok = False
        reason = "Lava's fixed_pt run of the tiny network differs from the integer reference at step 2"

        def to_dict(self):
            return {"ok": False}

    monkeypatch.setattr(sys.modules["msat_lava.doctor"], "run_doctor", lambda: Failed())
    code, out, err = _call(["doctor", "--json"])
    assert code == 1 and json.loads(out) == {"ok": False}
    assert _one_line(err) == f"msat-lava doctor: FAILED: {Failed.reason}"


# ---------------------------------------------------------------------------------------------------------
# one data loader: the same bad file gets the same message from every command that reads an .npz
# ---------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, words", [
    ("missing.npz", ["no such file"]), ("garbage.bin", ["not an .npz archive"]), ("arr.npy", ["not an .npz"]),
    ("nan.npz", ["key 'x'", "NaN"]), ("empty.npz", ["key 'x'", "non-empty"]), ("boolx.npz", ["key 'x'", "numeric"]),
    ("huge.npz", ["key 'x'", "float32"]),
])
def test_every_command_reads_npz_through_msat_lava_data(d, name, words):
    path = d / name
    argvs = {"convert": [*f"{C_DATA}".format(d=d).split(), str(path)],
             "run": ["run", str(d / "const.net"), "--steps", "2", "--data", str(path)],
             "verify": ["verify", str(d / "const.net"), "--data", str(path)],
             "deploy": ["deploy", str(d / "const.net"), "--data", str(path)],
             "eval": ["eval", str(d / "const.net"), "--steps", "2", "--out", str(d / "ev"), "--data", str(path)]}
    messages = {}
    for command, argv in argvs.items():
        code, _, err = _call(argv)
        line = _one_line(err)
        assert code == 2 and line.startswith(f"msat-lava {command}: error: "), line
        messages[command] = line.split(": error: ", 1)[1]
        for w in words:
            assert w in messages[command], (command, messages[command])
    assert len(set(messages.values())) == 1, messages  # one loader, one message
    code, _, err = _call([*argvs["eval"][:-1], str(d / "data.npz"), "--calib-data", str(path)])
    assert code == 2 and name in _one_line(err), err


def test_norm_messages_name_the_option_everywhere(d):
    for argv in ([*C_DATA.format(d=d).split(), str(d / "data.npz")],
                 ["run", str(d / "const.net"), "--steps", "2", "--data", str(d / "data.npz")]):
        for extra, word in ((["--norm-std", "0"], "--norm-std"), (["--norm-mean", "1,2"], "--norm-mean"),
                            (["--input-scale", "1e-300"], "--input-scale"), (["--input-scale", "0"], "--input-scale")):
            code, _, err = _call([*argv, *extra])
            line = _one_line(err)
            assert code == 2 and word in line and "data.npz" in line, line


def test_an_x_only_file_is_calibration_and_input_data(d, tmp_path):
    """The issue's surprise: convert --data took x, eval --calib-data refused it. Now both take it
    (data.calibration_key) and the calibration subset is the same rule (data.random_indices)."""
    from msat_lava.data import calibration_key, load_calibration, random_indices

    out = tmp_path / "x.net"
    code, _, err = _call([*f"convert --quiet --out {out} {MODEL_ARGS}".format(d=d).split(), "--data",
                          str(d / "xonly.npz"), "--calib-samples", "4", "--method", "const"])
    assert code == 0, err
    code, _, err = _call(["eval", str(out), "--data", str(d / "data.npz"), "--steps", "2", "--methods", "const",
                          "--calib-data", str(d / "xonly.npz"), "--json", "--quiet"])
    assert code == 0, err
    assert calibration_key(["x", "y"]) == "x" and calibration_key(["x_train", "x"]) == "x_train"
    assert calibration_key(["x", "y"], explicit=False) is None
    assert calibration_key(["x", "x_train"], explicit=False) is None and calibration_key(["x_train"], explicit=False)
    loaded = load_calibration(d / "xonly.npz", samples=4, seed=3)
    np.testing.assert_array_equal(loaded.indices, random_indices(10, 4, 3))
    np.testing.assert_array_equal(loaded.indices,
                                  np.sort(np.random.default_rng(3).choice(10, 4, replace=False)))  # eval's draw


# ---------------------------------------------------------------------------------------------------------
# output directories only where asked
# ---------------------------------------------------------------------------------------------------------
def test_no_output_in_the_working_directory_unless_asked(d, tmp_path, monkeypatch):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    net, data = str(d / "const.net"), str(d / "data.npz")
    for argv in (["info", net], ["run", net, "--data", data, "--steps", "2", "--quiet"],
                 ["deploy", net, "--data", data, "--set", "bias_mant_bits=14"],
                 ["eval", net, "--data", data, "--steps", "2", "--methods", "const", "--json", "--quiet"]):
        code, _, err = _call(argv)
        assert code == 0, (argv, err)
        assert sorted(os.listdir(work)) == [], argv
    # the documented default of eval without --out and --json: ./msat-lava-eval, named on stdout (even --quiet)
    code, out, err = _call(["eval", net, "--data", data, "--steps", "2", "--methods", "const", "--quiet",
                            "--no-html"])
    assert code == 0, err
    assert sorted(os.listdir(work)) == ["msat-lava-eval"] and "msat-lava-eval" in out
