"""Every value of a run's config checked before any work: one table of rules, every problem listed.

``check_config(cfg)`` runs at the start of :func:`mer.pipeline.run` (and of ``mer.extract``,
``mer.tune``, ``mer.corrupt`` and ``mer.pretrain``) before the manifest is read or a cache entry
filled, so ``train.lr=abc`` or ``fusion.name=atention`` fails in seconds with its line, not after
an extraction::

    train.lr: expected a positive number, got 'abc'
    fusion.name: unknown fusion model 'atention'; known: attention, gru, ... Did you mean 'attention'?

The rules are data (:data:`RULES`: a dotted key, ``*`` for every child, and a check); a key the
config does not have is skipped, so one table serves the run, tune, corrupt and pretrain configs. Checks
that need a plugin (extractor options, strategy options, fusion parameters, recipe options)
build it without weights or look at its signature. Unknown keys under ``train`` and ``track`` (added
with ``+train.lrr=...``) get a "did you mean" against the keys the shipped configs define.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from omegaconf import DictConfig, ListConfig, OmegaConf

from feature_extractors.asr.base import ASR_ENGINES
from feature_extractors.base import EXTRACTORS, MODALITIES
from mer.core.errors import UserError, user_message
from mer.core.samples import TARGETS
from mer.data.corrupt import CorruptionSettings, parse_condition
from mer.data.recipes import COMMON_OPTIONS, RECIPES
from mer.evaluation.metrics import SENTIMENT_METRICS
from mer.training.folds import PROTOCOLS
from submissions.schema import SUBMISSION_SCHEMAS

CONF_DIR = Path(__file__).resolve().parent / "conf"

Check = Callable[[Any, DictConfig], "str | list[str] | None"]
"""``check(value, cfg)``: what is wrong with ``value`` (``"expected ..."``; ``".sub.key: ..."`` for a
key below it; a list for several), or ``None``."""


@dataclass(frozen=True)
class Rule:
    key: str            # dotted path; ``*`` matches every child of a mapping
    check: Check
    optional: bool = False   # ``null`` is a valid value


# --- value checks ------------------------------------------------------------------------------
def _shown(value: Any) -> str:
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=False)
    return repr(value)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        return int(value.strip())
    return None


def number(low: float | None = None, high: float | None = None, *, low_open: bool = False,
           what: str | None = None) -> Check:
    """A finite number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    if what is None:
        if low == 0 and low_open and high is None:
            what = "a positive number"
        elif low == 0 and high is None:
            what = "a number >= 0"
        elif low is not None and high is not None:
            what = f"a number in {'(' if low_open else '['}{low:g}, {high:g}]"
        else:
            what = "a number"

    def check(value: Any, cfg: DictConfig) -> str | None:
        x = _as_number(value)
        bad = (x is None or not math.isfinite(x) or (low is not None and (x <= low if low_open else x < low))
               or (high is not None and x > high))
        return f"expected {what}, got {_shown(value)}" if bad else None
    return check


def integer(low: int | None = None, high: int | None = None) -> Check:
    what = ("an integer" if low is None else f"an integer >= {low}") if high is None else \
        f"an integer in [{low}, {high}]"

    def check(value: Any, cfg: DictConfig) -> str | None:
        x = _as_int(value)
        bad = x is None or (low is not None and x < low) or (high is not None and x > high)
        return f"expected {what}, got {_shown(value)}" if bad else None
    return check


def boolean(value: Any, cfg: DictConfig) -> str | None:
    return None if isinstance(value, bool) else f"expected true or false, got {_shown(value)}"


def string(value: Any, cfg: DictConfig) -> str | None:
    return None if isinstance(value, str) and value.strip() else f"expected a name, got {_shown(value)}"


def choice(*options: Any) -> Check:
    def check(value: Any, cfg: DictConfig) -> str | None:
        if value in options:
            return None
        close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1)
        return (f"expected one of {', '.join(str(o) for o in options)}, got {_shown(value)}"
                + (f"; did you mean {close[0]}?" if close else ""))
    return check


def either(*checks: Check, what: str) -> Check:
    def check(value: Any, cfg: DictConfig) -> str | None:
        if any(c(value, cfg) is None for c in checks):
            return None
        return f"expected {what}, got {_shown(value)}"
    return check


def list_of(item: Check, *, non_empty: bool = True, unique: bool = False, what: str = "a list") -> Check:
    def check(value: Any, cfg: DictConfig) -> str | None:
        if not isinstance(value, (list, tuple, ListConfig)):
            return f"expected {what}, got {_shown(value)}"
        items = list(value)
        if non_empty and not items:
            return f"expected {what} with at least one item, got []"
        for i, x in enumerate(items):
            bad = item(x, cfg)
            if bad:
                return f"item {i}: {bad}"
        if unique and len({str(x) for x in items}) != len(items):
            return f"expected {what} without repeats, got {_shown(value)}"
        return None
    return check


def registered(load: Callable[[], Any]) -> Check:
    """A name of a registry (``load()`` returns it): unknown names list the known ones."""
    def check(value: Any, cfg: DictConfig) -> str | None:
        if not isinstance(value, str):
            return f"expected a name, got {_shown(value)}"
        registry = load()
        if value in registry:
            return None
        try:
            registry.get(value)
        except KeyError as err:
            return str(err)
        return None
    return check


def existing_dir(value: Any, cfg: DictConfig) -> str | None:
    path = Path(str(value)).expanduser()
    return None if path.is_dir() else f"{path} is not a folder"


def device(value: Any, cfg: DictConfig) -> str | None:
    text = str(value)
    ok = text in ("auto", "cpu", "cuda", "mps") or (text.startswith("cuda:") and text[5:].isdigit())
    return None if ok else f"expected auto, cpu, cuda, cuda:<index> or mps, got {_shown(value)}"


# --- registries (imported on use: checking a config must not import torch models it does not name)
def _fusion_models():
    from fusion.base import FUSION  # deferred: loads torch only when used

    return FUSION


def _strategies():
    from mer.tracks.base import STRATEGIES  # deferred: loads sklearn, torch, tqdm only when used

    return STRATEGIES


def _recipes():
    return RECIPES


def _schemas():
    return SUBMISSION_SCHEMAS


def _asr_engines():
    return ASR_ENGINES


# --- checks that build the plugin a value names ----------------------------------------------
def _plain(node: Any) -> Any:
    if isinstance(node, (DictConfig, ListConfig)):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _unknown_options(given: Iterable[str], known: Sequence[str], where: str) -> str | None:
    unknown = sorted(set(given) - set(known))
    if not unknown:
        return None
    hints = [f"{u} (did you mean {c[0]}?)" if (c := difflib.get_close_matches(u, known, n=1)) else u
             for u in unknown]
    return f"{where} has no option {', '.join(hints)}; options: {', '.join(sorted(known)) or '(none)'}"


def feature_stream(value: Any, cfg: DictConfig) -> str | None:
    """``features.<stream>``: a registered extractor whose frozen Config accepts the options (built
    without weights), each option of the type of its default."""
    if value is None or not value.get("name"):
        return None

    registry = EXTRACTORS
    name = str(value.name)
    try:
        cls = registry.get(name)
    except KeyError as err:
        return f".name: {err}"
    options = _plain(value.get("options")) or {}
    if not isinstance(options, dict):
        return f".options: expected a mapping of option: value, got {_shown(options)}"
    fields = {f.name: f for f in dataclasses.fields(cls.Config)}
    bad = _unknown_options(options, list(fields), f"extractor {name}")
    if bad:
        return f".options: {bad}"
    defaults = cls.Config()
    for key, given in options.items():
        current = getattr(defaults, key)
        problem = _same_kind(current, given)
        if problem:
            return f".options.{key}: {problem}"
    try:
        cls(**options)
    except (TypeError, ValueError) as err:
        return f".options: {err}"
    return None


def _same_kind(default: Any, given: Any) -> str | None:
    """``given`` can stand where ``default`` is (a bool for a bool, a number for a number ...)."""
    if given is None or default is None:
        return None
    if isinstance(default, bool):
        return None if isinstance(given, bool) else f"expected true or false, got {_shown(given)}"
    if isinstance(default, numbers.Integral):
        return None if _as_int(given) is not None else f"expected an integer, got {_shown(given)}"
    if isinstance(default, numbers.Real):
        return None if _as_number(given) is not None else f"expected a number, got {_shown(given)}"
    return None


def fusion_params(value: Any, cfg: DictConfig) -> str | None:
    """``fusion.params``: keyword arguments the fusion model's constructor takes."""
    name = cfg.get("fusion", {}).get("name") if cfg.get("fusion") is not None else None
    if not isinstance(name, str) or name not in _fusion_models():
        return None                                  # fusion.name reports it
    params = _plain(value) or {}
    if not isinstance(params, dict):
        return f"expected a mapping of parameter: value, got {_shown(params)}"
    sig = inspect.signature(_fusion_models().get(name).__init__)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    known = [p for p in sig.parameters if p not in ("self", "input_dims", "num_classes", "has_valence")]
    bad = _unknown_options(params, known, f"fusion model {name}")
    if bad:
        return bad
    for key, given in params.items():
        default = sig.parameters[key].default
        problem = None if default is inspect.Parameter.empty else _same_kind(default, given)
        if problem:
            return f".{key}: {problem}"
    return None


def strategy_options(value: Any, cfg: DictConfig) -> str | None:
    """``track.strategy_options``: the strategy is built with them (strategies hold no weights)."""
    track = cfg.get("track")
    name = track.get("strategy") if track is not None else None
    if track is None or not isinstance(name, str) or name not in _strategies():
        return None
    options = _plain(value) or {}
    if not isinstance(options, dict):
        return f"expected a mapping of option: value, got {_shown(options)}"
    cls = _strategies().get(name)
    params = inspect.signature(cls.__init__).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in params.values()):
        bad = _unknown_options(options, [p for p in params if p != "self"], f"strategy {name}")
        if bad:
            return bad
    for key, given in options.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        problem = None if default is inspect.Parameter.empty else _same_kind(default, given)
        if problem:
            return f".{key}: {problem}"
    try:
        cls(**options)
    except (TypeError, ValueError) as err:
        return str(err)
    return None


def recipe_options(value: Any, cfg: DictConfig) -> str | None:
    """``data.options``: keyword arguments of the layout's recipe."""
    layout = cfg.data.get("layout")
    if not isinstance(layout, str) or layout not in _recipes():
        return None
    options = _plain(value) or {}
    if not isinstance(options, dict):
        return f"expected a mapping of option: value, got {_shown(options)}"
    sig = inspect.signature(_recipes().get(layout))
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None

    known = [p for p in list(sig.parameters)[1:]] + list(COMMON_OPTIONS)   # the first is the root
    return _unknown_options(options, known, f"layout {layout}")


def modalities(value: Any, cfg: DictConfig) -> str | None:
    if not isinstance(value, (list, tuple, ListConfig)) or not value:
        return f"expected null or a list of streams or modalities, got {_shown(value)}"
    streams = [str(k) for k, v in (cfg.get("features") or {}).items() if v is not None and v.get("name")]
    known = sorted(set(MODALITIES) | set(streams))
    unknown = [str(m) for m in value if str(m) not in known]
    return f"unknown {', '.join(unknown)}; streams and modalities: {', '.join(known)}" if unknown else None


def sequence_align(value: Any, cfg: DictConfig) -> str | None:
    if _as_int(value) is not None:
        return None if _as_int(value) >= 1 else f"expected a number of steps >= 1, got {_shown(value)}"
    streams = [str(k) for k, v in (cfg.get("features") or {}).items() if v is not None and v.get("name")]
    if isinstance(value, str) and value in (*streams, "none", ""):
        return None
    return f"expected null, a number of steps or a feature stream ({', '.join(streams)}), got {_shown(value)}"


def window(value: Any, cfg: DictConfig) -> str | None:
    size, hop = (value or {}).get("size"), (value or {}).get("hop")
    if size is None and hop is None:
        return None
    s, h = _as_int(size), _as_int(hop if hop is not None else size)
    if s is None or h is None or s < 1 or not 1 <= h <= s:
        return f"expected size >= 1 and 1 <= hop <= size (or both null), got size={size}, hop={hop}"
    return None


def extract_workers(value: Any, cfg: DictConfig) -> str | None:
    if value == "auto" or (_as_int(value) is not None and _as_int(value) >= 0):
        return None
    return f"expected auto or a number of processes >= 0, got {_shown(value)}"


def known_keys(group: str) -> Check:
    """Keys of ``cfg.<group>``: those some shipped ``conf/<group>/*.yaml`` defines (and
    :data:`_EXTRA_KEYS`); anything else is a typo or an option nothing reads."""
    def check(value: Any, cfg: DictConfig) -> str | None:
        if not isinstance(value, DictConfig):
            return None
        known = _shipped_keys(group)
        unknown = [str(k) for k in value.keys() if str(k) not in known]
        if not unknown:
            return None
        out = []
        for u in unknown:
            close = difflib.get_close_matches(u, sorted(known), n=1)
            hint = f"; did you mean {group}.{close[0]}?" if close else \
                (f"; options: {', '.join(sorted(known))}" if len(known) <= 12 else "")
            out.append(f".{u}: no such option (nothing reads it){hint}")
        return out
    return check


_SHIPPED: dict[str, set[str]] = {}


def _shipped_keys(group: str) -> set[str]:
    if group not in _SHIPPED:
        keys: set[str] = set()
        for path in sorted((CONF_DIR / group).glob("*.yaml")):
            node = OmegaConf.load(path)
            if isinstance(node, DictConfig):
                keys |= {str(k) for k in node.keys()}
        keys |= _EXTRA_KEYS.get(group, set())
        keys.discard("defaults")
        _SHIPPED[group] = keys
    return _SHIPPED[group]


_EXTRA_KEYS = {"track": {"corruption"}, "train": {"grad_clip", "num_threads"}}
"""Keys code reads that a shipped group file may leave out (``track.corruption`` comes from a
defaults entry)."""


def _metric_names() -> tuple[str, ...]:
    return ("auto", "wf1", "acc", "combined", "mse", "frame_f1", "arousal_ccc", "valence_ccc", "va_ccc",
            *SENTIMENT_METRICS)


def fold_protocol(value: Any, cfg: DictConfig) -> str | None:
    return choice(*PROTOCOLS)(value, cfg)


def targets(value: Any, cfg: DictConfig) -> str | None:
    chosen = [value] if isinstance(value, str) else list(value) if isinstance(value, (list, ListConfig)) else None
    if not chosen or any(t not in TARGETS for t in chosen):
        return f"expected {', '.join(TARGETS)} or a list of them, got {_shown(value)}"
    return None


def corruption_condition(value: Any, cfg: DictConfig) -> str | None:
    try:
        parse_condition(str(value))
    except ValueError as err:
        return str(err)
    return None


def corruption(value: Any, cfg: DictConfig) -> str | None:
    """``corruption`` / ``track.corruption``: the options :class:`CorruptionSettings` takes."""

    options = _plain(value) or {}
    try:
        CorruptionSettings.from_config(options)
    except (TypeError, ValueError) as err:
        return str(err)
    defaults = CorruptionSettings()
    for key, given in options.items():
        problem = _same_kind(getattr(defaults, key), given)
        if problem:
            return f".{key}: {problem}"
    return None


def metric(value: Any, cfg: DictConfig) -> str | None:
    return choice(*_metric_names())(value, cfg)


def _fraction_below_one(value: Any, cfg: DictConfig) -> str | None:
    x = _as_number(value)
    return None if x is not None and 0 <= x < 1 else f"expected a number in [0, 1), got {_shown(value)}"


def blend_weight(value: Any, cfg: DictConfig) -> str | None:
    """``train.blend_linear``: ``auto`` or a weight in [0, 1]."""
    if value == "auto":
        return None
    x = _as_number(value)
    return None if x is not None and 0 <= x <= 1 else f"expected auto or a number in [0, 1], got {_shown(value)}"


# --- the table ----------------------------------------------------------------------------------
RULES: tuple[Rule, ...] = (
    Rule("seed", integer()),
    Rule("device", device),
    Rule("progress", boolean),
    Rule("ablate_modalities", boolean),
    Rule("modalities", modalities, optional=True),
    Rule("paths.cache_dir", string),
    Rule("paths.runs_dir", string),
    Rule("train", known_keys("train")),
    Rule("train.epochs", integer(1)),
    Rule("train.lr", number(0, low_open=True)),
    Rule("train.weight_decay", number(0)),
    Rule("train.batch_size", integer(1)),
    Rule("train.grad_clip", number(0, low_open=True), optional=True),
    Rule("train.n_folds", integer(2)),
    Rule("train.seeds", list_of(integer(0), unique=True, what="a list of seeds (integers >= 0)")),
    Rule("train.standardize", boolean),
    Rule("train.num_threads", integer(1), optional=True),
    Rule("train.protocol", fold_protocol, optional=True),
    Rule("train.selection", choice("inner", "fold")),
    Rule("train.inner_fraction", number(0, 0.5, low_open=True)),
    Rule("train.patience", integer(1), optional=True),
    Rule("train.blend_linear", blend_weight),
    Rule("sequence.max_steps", integer(1), optional=True),
    Rule("sequence.align", sequence_align, optional=True),
    Rule("sequence.method", choice("auto", "linear", "nearest")),
    Rule("sequence.window", window, optional=True),
    Rule("extract.workers", extract_workers),
    Rule("extract.timeout_s", number(0, low_open=True), optional=True),
    Rule("extract.memory_mb", integer(1), optional=True),
    Rule("extract.prefetch", integer(1)),
    Rule("extract.max_failure_fraction", number(0, 1)),
    Rule("extract.shards", integer(1)),
    Rule("extract.launcher", choice("local", "ray")),
    Rule("extract.retry_failures", list_of(string, non_empty=False, what="a list of failure reasons"),
         optional=True),
    Rule("tracking.name", choice("mlflow", "none")),
    Rule("fusion.name", registered(_fusion_models)),
    Rule("fusion.params", fusion_params, optional=True),
    Rule("track", known_keys("track")),
    Rule("track.name", string),
    Rule("track.strategy", registered(_strategies)),
    Rule("track.strategy_options", strategy_options, optional=True),
    Rule("track.metric", metric),
    Rule("track.baseline", registered(_strategies), optional=True),
    Rule("track.hide_labels.fraction", _fraction_below_one, optional=True),
    Rule("track.hide_labels.seed", integer(0), optional=True),
    Rule("data.layout", registered(_recipes)),
    Rule("data.root", existing_dir, optional=True),
    Rule("data.options", recipe_options, optional=True),
    Rule("data.targets", targets, optional=True),
    Rule("data.submissions.*.schema", registered(_schemas)),
    Rule("asr.name", registered(_asr_engines), optional=True),
    Rule("condition", corruption_condition),                      # mer.corrupt
    Rule("corruption", corruption, optional=True),
    Rule("track.corruption", corruption, optional=True),
    Rule("track.strategy_options.train_on", list_of(corruption_condition, non_empty=False,
                                                    what="a list of corruption conditions"), optional=True),
    Rule("features.*", feature_stream, optional=True),
)
"""What every config value must be. The ``track.*`` rules are the supervised family's: the open
vocabulary and partial-label strategies check their own track keys (``baseline: true`` is the pll
track's flag)."""


# --- walking the config -------------------------------------------------------------------------
_ABSENT = object()


def _select(cfg: Any, parts: Sequence[str], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """``(full key, value)`` for every path matching ``parts`` (``*``: each child)."""
    if not parts:
        yield prefix, cfg
        return
    if not isinstance(cfg, DictConfig):
        return
    head, rest = parts[0], parts[1:]
    keys = [str(k) for k in cfg.keys()] if head == "*" else [head]
    present = {str(k) for k in cfg.keys()}
    for key in keys:
        if key not in present:
            continue
        node = cfg._get_node(key)
        full = f"{prefix}.{key}" if prefix else key
        if node._is_missing():
            yield full, _ABSENT
            continue
        yield from _select(cfg[key], rest, full)


def config_problems(cfg: DictConfig, rules: Sequence[Rule] = RULES) -> list[str]:
    """Every problem of ``cfg`` as ``"<key>: <what is wrong>"`` (empty when all is well)."""
    problems: list[str] = []
    for rule in rules:
        # the track.* rules are the supervised family's; the OV and PLL strategies check their own keys
        if rule.key.startswith("track.") and rule.key not in ("track.name", "track.strategy",
                                                              "track.strategy_options") \
                and _own_protocol(cfg):
            continue
        try:
            matches = list(_select(cfg, rule.key.split(".")))
        except Exception as err:  # noqa: BLE001 - a broken interpolation is the user's problem
            problems.append(f"{rule.key}: {_first_line(err)}")
            continue
        for key, value in matches:
            if value is _ABSENT:
                problems.append(f"{key}: no value is set (???); add {key}=...")
                continue
            if value is None and rule.optional:
                continue
            try:
                bad = rule.check(value, cfg)
            except (Exception, SystemExit) as err:  # noqa: BLE001 - a failing interpolation, an
                bad = _first_line(err)              # extractor that refuses its options ...
            for b in ([bad] if isinstance(bad, str) else bad or []):
                # a check may name a key below its own: ".options.x: ..."
                problems.append(f"{key}{b}" if b.startswith(".") else f"{key}: {b}")
    return problems


def _own_protocol(cfg: DictConfig) -> bool:
    """Whether the track's strategy is outside the supervised family (open vocabulary, partial
    labels): its track keys (``baseline: true``...) mean other things and are its own to check."""
    from mer.tracks.supervised import SupervisedStrategy  # deferred: loads pandas, sklearn, torch, tqdm only when used

    track = cfg.get("track")
    name = track.get("strategy") if track is not None else None
    if not isinstance(name, str) or name not in _strategies():
        return False
    return not issubclass(_strategies().get(name), SupervisedStrategy)


def _first_line(err: BaseException) -> str:
    text = user_message(err) or f"{type(err).__name__}: {err}"
    if isinstance(err, SystemExit) and user_message(err) is None:
        raise err
    return text.strip().splitlines()[0] if text.strip() else type(err).__name__


def check_config(cfg: DictConfig, rules: Sequence[Rule] = RULES) -> None:
    """Raise one :class:`UserError` listing every problem of ``cfg`` (one line each)."""
    problems = config_problems(cfg, rules)
    if not problems:
        return
    if len(problems) == 1:
        raise UserError(problems[0])
    raise UserError(f"{len(problems)} config problems:\n" + "\n".join(f"  {p}" for p in problems))
