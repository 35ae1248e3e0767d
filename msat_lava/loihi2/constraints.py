"""The Loihi 2 constraints model: every hardware number the pre-flight check uses, in one place.

Each field of :class:`Loihi2Constraints` has a source in :data:`SOURCES` (mirrored by the table in
docs/LOIHI2.md): ``P`` a primary public source (Lava / lava-dl code or docs, vendor page), ``P-inferred``
derived from public compile logs, ``calibrated`` a non-public number whose default was chosen so that the
estimator reproduces the public core counts (docs/LOIHI2.md §4), ``assumed`` a non-public number with a
documented guess. Every field can be overridden: :meth:`Loihi2Constraints.with_overrides` (``--set KEY=VALUE``)
and :func:`load_constraints` (``--constraints FILE.json``, an object of field → value). Unknown keys, wrong
types and out-of-range values raise :class:`ConstraintsError` (bad input, exit 2) naming the key.

Units: neurons and axons are counts per core; synaptic memory is in words of ``synmem_word_bits`` bits per
core; bits are bits; delays are time steps.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from msat_lava.cli_common import BadInput

__all__ = ["Loihi2Constraints", "ConstraintsError", "SOURCES", "load_constraints", "parse_override",
           "DEFAULT_SLOTS"]


class ConstraintsError(BadInput):
    """A constraints file or override is unusable (exit code 2); the message names the file and key."""


#: Neuron slots one neuron of each model takes (the 4096-slot budget is counted in CUBA-LIF neurons).
DEFAULT_SLOTS = {"cuba": 1, "sdn": 5, "msat": 2, "const": 1, "lipool": 1, "readout": 1, "input": 1}


@dataclass(frozen=True)
class Loihi2Constraints:
    """Per-chip and per-core limits of Loihi 2 (sources: :data:`SOURCES`, docs/LOIHI2.md §1).

    * ``cores_per_chip``: neuro cores per chip; ``chips``: chips available to the deployment (1 = Oheo Gulch;
      a Kapoho Point board has 8); a plan needing ceil(cores / cores_per_chip) > chips is a violation.
    * ``neuron_slots_per_core``: neuron slots of one core, counted in CUBA-LIF neurons; a neuron of model M
      takes ``slots[M]`` slots. ``neuron_groups_per_core``: distinct neuron groups a core can hold (the
      partitioner places one tile of one layer per core, so this is reported, and checked against 1 tile).
    * ``synmem_words_per_core`` × ``synmem_word_bits``: synaptic memory of one core.
    * ``axons_in_per_core`` / ``axons_out_per_core``: distinct source neurons whose spikes a core receives
      (fan-in) / destination entries the neurons of a core send to (fan-out: one per (neuron, destination core)).
    * ``weight_bits``: signed weight mantissa width; ``delay_bits``: synaptic delay width (0..2^bits − 1 steps).
    * ``payload_bits``: graded spike payload width (signed); ``state_bits``: neuron state word (u, v);
      ``accum_bits``: dendritic accumulator width a neuron reads its input from (signed).
    * ``bias_mant_bits``: Lava LIF bias = bias_mant·2^bias_exp, signed mantissa of that width (netx: exp 6).
    * ``lut_entries_per_core``: 32-bit table entries a core can hold for a microcoded neuron (MSAT's LUTs).
    * ``input_on_chip``: the input layer is a neuron group on the chip (netx's ``input`` layer).
    * ``conv_weight_sharing``: a conv tile stores its kernel slice once (else every synapse explicitly).
    """

    cores_per_chip: int = 128
    chips: int = 1
    neuron_slots_per_core: int = 4096
    neuron_groups_per_core: int = 8
    synmem_words_per_core: int = 12000
    synmem_word_bits: int = 64
    axons_in_per_core: int = 4096
    axons_out_per_core: int = 4096
    weight_bits: int = 8
    delay_bits: int = 6
    payload_bits: int = 24
    state_bits: int = 24
    accum_bits: int = 24
    bias_mant_bits: int = 13
    lut_entries_per_core: int = 16384
    input_on_chip: bool = True
    conv_weight_sharing: bool = True
    slots: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_SLOTS))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "slots":
                if not isinstance(value, Mapping):
                    raise ConstraintsError(f"field 'slots': expected an object of model → slots, got {value!r}")
                merged = dict(DEFAULT_SLOTS)
                for k, v in value.items():
                    if k not in DEFAULT_SLOTS:
                        raise ConstraintsError(f"field 'slots.{k}': unknown neuron model (known: "
                                               f"{', '.join(DEFAULT_SLOTS)})")
                    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                        raise ConstraintsError(f"field 'slots.{k}': expected a positive integer, got {v!r}")
                    merged[k] = int(v)
                object.__setattr__(self, "slots", merged)
            elif f.type in ("bool", bool):
                if not isinstance(value, bool):
                    raise ConstraintsError(f"field {f.name!r}: expected true or false, got {value!r}")
            else:
                if isinstance(value, bool) or not isinstance(value, int):
                    raise ConstraintsError(f"field {f.name!r}: expected an integer, got {value!r}")
                low = 0 if f.name == "delay_bits" else 1
                if value < low:
                    raise ConstraintsError(f"field {f.name!r}: must be >= {low}, got {value}")
                if value > 1 << 40:
                    raise ConstraintsError(f"field {f.name!r}: implausibly large ({value})")

    # ---------------------------------------------------------------------------------------------- derived
    @property
    def synmem_bits_per_core(self) -> int:
        return self.synmem_words_per_core * self.synmem_word_bits

    @property
    def max_delay(self) -> int:
        return (1 << self.delay_bits) - 1

    def chips_needed(self, cores: int) -> int:
        """ceil(cores / cores_per_chip) (logical core id → chip id // cores_per_chip, Lava's mapper)."""
        return max(1, math.ceil(cores / self.cores_per_chip)) if cores else 0

    # ---------------------------------------------------------------------------------------------- io
    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["slots"] = dict(self.slots)
        return d

    def with_overrides(self, overrides: Mapping[str, Any], *, where: str = "override") -> "Loihi2Constraints":
        """A copy with ``overrides`` (field → value; ``slots.MODEL`` → value) applied."""
        known = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        slots = dict(self.slots)
        for key, value in overrides.items():
            if key.startswith("slots."):
                slots[key[6:]] = value
                changes["slots"] = slots
            elif key == "slots" and isinstance(value, Mapping):
                slots.update(value)
                changes["slots"] = slots
            elif key in known:
                changes[key] = value
            else:
                raise ConstraintsError(f"{where}: unknown constraint {key!r} (known: {', '.join(sorted(known))})")
        try:
            return dataclasses.replace(self, **changes)
        except ConstraintsError as exc:
            raise ConstraintsError(f"{where}: {exc}") from None


def parse_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` of ``--set``: VALUE is an integer or true/false."""
    key, sep, raw = text.partition("=")
    key, raw = key.strip(), raw.strip()
    if not sep or not key:
        raise ConstraintsError(f"--set {text!r}: expected KEY=VALUE")
    low = raw.lower()
    if low in ("true", "false"):
        return key, low == "true"
    try:
        return key, int(raw, 0)
    except ValueError:
        raise ConstraintsError(f"--set {text!r}: VALUE must be an integer or true/false") from None


#: Largest constraints file read (it is a small JSON object).
MAX_FILE_BYTES = 1 << 16


def load_constraints(path: str | os.PathLike | None = None, overrides: Mapping[str, Any] | None = None
                     ) -> Loihi2Constraints:
    """Defaults, then the JSON object in ``path`` (field → value), then ``overrides``."""
    c = Loihi2Constraints()
    if path is not None:
        p = os.fspath(path)
        try:
            size = os.path.getsize(p)
            if size > MAX_FILE_BYTES:
                raise ConstraintsError(f"constraints file {p!r}: {size} bytes, more than {MAX_FILE_BYTES}")
            with open(p, "rb") as fh:
                data = json.loads(fh.read().decode("utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConstraintsError(f"constraints file {p!r}: {exc}") from None
        if not isinstance(data, dict):
            raise ConstraintsError(f"constraints file {p!r}: expected a JSON object of constraint → value")
        data = {k: v for k, v in data.items() if not str(k).startswith("_")}   # "_comment" keys allowed
        c = c.with_overrides(data, where=f"constraints file {p!r}")
    if overrides:
        c = c.with_overrides(overrides, where="--set")
    return c


#: field → (tag, source). The docs table (docs/LOIHI2.md §1) is this, in words.
SOURCES: dict[str, tuple[str, str]] = {
    "cores_per_chip": ("P", "wikichip Loihi 2; Lava compiler constant NUM_VIRTUAL_CORES_L2 = 128"),
    "chips": ("deployment", "1 = Oheo Gulch single chip; Kapoho Point = 8 chips (choose with --set chips=N)"),
    "neuron_slots_per_core": ("P-inferred", "lava-dl netx yolo_kp compile log: Conv(8,7,64) = 3584 neurons "
                                            "shows as 87.52 % 'Neurons' → 4095 CUBA-LIF slots"),
    "neuron_groups_per_core": ("P-inferred", "same logs: one group shows as 12.5 % 'NeuronGr'"),
    "synmem_words_per_core": ("P", "cost-model register SynMem = 12000 in the public netx oxford/pilotnet_sdnn "
                                   "notebook outputs (units not public)"),
    "synmem_word_bits": ("calibrated", "not public; 64-bit words with dense rows packed per axon reproduce MNIST "
                                       "784-128-64-10 = 5 cores and the oxford log's SynMem allocation 16128 "
                                       "(= 256 axons × ceil(200·20/64))"),
    "axons_in_per_core": ("calibrated", "not public for Loihi 2; Loihi 1 = 4096 (NengoLoihi validate.py); "
                                        "reproduces PilotNet LIF within 5 %"),
    "axons_out_per_core": ("assumed", "not public for Loihi 2; Loihi 1 = 4096 (NengoLoihi validate.py)"),
    "weight_bits": ("P", "lava/proc/dense/process.py: 8-bit signed mantissa, num_weight_bits 1..8"),
    "delay_bits": ("P", "PyDelayDenseModelBitAcc docstring: 'Loihi 2 has a maximum of 6 bits for delays'"),
    "payload_bits": ("P", "Lava graded models precision=24, GradedVecNetwork num_message_bits=24 "
                          "(Intel brief: up to 32)"),
    "state_bits": ("P", "lava/proc/lif/models.py bit-accurate LIF: u, v 24-bit"),
    "accum_bits": ("assumed", "dendritic accumulator width not public; PyDenseModelBitAcc a_out is 16-bit for "
                              "binary spikes, graded payloads are 24-bit: 24 assumed"),
    "bias_mant_bits": ("P", "lava/proc/lif/models.py: bias_mant 13-bit signed (netx loads bias with bias_exp 6)"),
    "lut_entries_per_core": ("assumed", "not public; 16384 × 32-bit = 64 KB of the 192 KB core SRAM"),
    "input_on_chip": ("P", "netx 'input' layer is a neuron group (PilotNet LIF network.net layer 0)"),
    "conv_weight_sharing": ("assumed", "not public; the public PilotNet counts are far below explicit conv "
                                       "synapses (docs/LOIHI2.md §2)"),
    "slots": ("P-inferred / calibrated", "cuba 1 (P-inferred); sdn 5 calibrated on PilotNet SDNN = 61; msat 2 "
                                         "assumed (v̂ and Ŝ words, docs/LOIHI2.md §5); others 1"),
}
