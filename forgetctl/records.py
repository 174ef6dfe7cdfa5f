"""Forget/retain data: parsing and validation, torch-free.

A record is either a document (`text`) or a QA pair (`question` + `answer`).
Accepted files: `.jsonl` (one object per line), `.json` (an array of objects, or one array
per line as `datasets.to_json` writes) and `.txt` (paragraphs separated by blank lines).
"""

from __future__ import annotations

import json
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from forgetctl.errors import InputError, NotFoundError

# Other datasets' spellings of the QA fields (TOFU's forget splits use prompt/response).
_QUESTION_KEYS = ("question", "prompt")
_ANSWER_KEYS = ("answer", "response")


@dataclass(frozen=True)
class Record:
    text: str | None = None
    question: str | None = None
    answer: str | None = None

    def __post_init__(self):
        is_doc = self.text is not None
        is_qa = self.question is not None or self.answer is not None
        if is_doc == is_qa:
            raise InputError("a record needs either 'text' or both 'question' and 'answer'")
        if is_qa and (not self.question or not self.answer):
            raise InputError("a QA record needs a non-empty 'question' and 'answer'")
        if is_doc and not self.text.strip():
            raise InputError("a text record must not be empty")

    @property
    def is_qa(self) -> bool:
        return self.question is not None

    def canonical_bytes(self) -> bytes:
        """Stable byte form used for commitments: NFC-normalised, sorted keys, no whitespace."""
        fields = {k: unicodedata.normalize("NFC", v) for k, v in vars(self).items() if v is not None}
        return json.dumps(fields, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _first(obj: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in obj:
            return obj[k]
    return None


def record_from_obj(obj, where: str) -> Record:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    question, answer = _first(obj, _QUESTION_KEYS), _first(obj, _ANSWER_KEYS)
    for name, value in (("text", text), ("question", question), ("answer", answer)):
        if value is not None and not isinstance(value, str):
            raise InputError(f"{where}: field '{name}' must be a string")
    if text is None and question is None and answer is None:
        raise InputError(f"{where}: missing field: needs 'text' or 'question'/'answer'")
    try:
        if text is not None:
            return Record(text=text)
        return Record(question=question, answer=answer)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None


def _parse_json_lines(path: Path, lines: list[str]) -> list[Record]:
    records = []
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where}: malformed JSON ({exc.msg})") from None
        items = obj if isinstance(obj, list) else [obj]
        records.extend(record_from_obj(item, where) for item in items)
    return records


def _try_json_array(raw: str):
    try:
        data = json.loads(raw)
    except json.JSONDecodeError:
        return None  # maybe one array per line: parsed line by line
    return data if isinstance(data, list) else None


def load_records(path: str | Path) -> list[Record]:
    """Parse a forget/retain file. Raises InputError with file:line on bad input, and on an empty set."""
    path = Path(path)
    if not path.is_file():
        raise NotFoundError(f"data file not found: {path}")
    try:
        raw = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path.name}: not UTF-8 text") from None
    suffix = path.suffix.lower()
    if suffix == ".txt":
        paragraphs = [p.strip() for p in raw.replace("\r\n", "\n").split("\n\n")]
        records = [Record(text=p) for p in paragraphs if p]
    elif suffix == ".json" and (data := _try_json_array(raw)) is not None:
        records = [record_from_obj(o, f"{path.name}[{i}]") for i, o in enumerate(data)]
    elif suffix in (".jsonl", ".json", ".ndjson"):
        records = _parse_json_lines(path, raw.splitlines())
    else:
        raise InputError(f"{path.name}: unsupported data format '{suffix}' (use .jsonl, .json or .txt)")
    if not records:
        raise InputError(f"{path.name}: the data set is empty")
    return records
