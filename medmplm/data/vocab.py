"""Code vocabularies: special tokens, then the codes of one code type, most frequent first.

A :class:`CodeVocab` maps the codes of one type (``diagnosis``, ``medication``) to ids. Ids
``0..3`` are the special tokens ``[PAD] [CLS] [MASK] [UNK]``; codes follow in the order of
``vocab/<type>.tsv`` of a prepared directory (see ``medmplm.data.schema``), so the most
frequent code has id 4.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from medmplm.data.vocab_io import read_vocab

PAD_TOKEN = "[PAD]"
CLS_TOKEN = "[CLS]"
MASK_TOKEN = "[MASK]"
UNK_TOKEN = "[UNK]"
SPECIAL_TOKENS = (PAD_TOKEN, CLS_TOKEN, MASK_TOKEN, UNK_TOKEN)
PAD_ID, CLS_ID, MASK_ID, UNK_ID = range(len(SPECIAL_TOKENS))
NUM_SPECIAL_TOKENS = len(SPECIAL_TOKENS)


class VocabMismatchError(ValueError):
    """Two vocabularies that must be the same (saved weights vs. vocabulary file) differ."""


class CodeVocab:
    """Ids for the codes of one code type, with the special tokens first.

    Args:
        code_type: what the codes are (``"diagnosis"``, ``"medication"``); recorded in saved files
            so that a diagnosis vocabulary is never loaded as a medication one.
        codes: the codes, in id order (id ``NUM_SPECIAL_TOKENS + i`` for ``codes[i]``).
    """

    def __init__(self, code_type: str, codes: Sequence[str]) -> None:
        seen: set[str] = set()
        for code in codes:
            if not isinstance(code, str) or not code:
                raise ValueError(f"{code_type} vocabulary: codes must be non-empty strings, got {code!r}")
            if code in SPECIAL_TOKENS:
                raise ValueError(f"{code_type} vocabulary: code {code!r} collides with a special token")
            if code in seen:
                raise ValueError(f"{code_type} vocabulary: code {code!r} appears twice")
            seen.add(code)
        self.code_type = code_type
        self.codes: list[str] = list(codes)
        self.tokens: list[str] = [*SPECIAL_TOKENS, *self.codes]
        self._ids = {token: i for i, token in enumerate(self.tokens)}

    @classmethod
    def from_tsv(
        cls, path: str | os.PathLike, code_type: str, min_count: int = 1, max_codes: int | None = None
    ) -> CodeVocab:
        """Build a vocabulary from a prepared ``vocab/<type>.tsv`` file.

        Args:
            path: the ``code<TAB>count`` file (most frequent first).
            code_type: the code type the file holds.
            min_count: codes seen fewer times are left out (they encode as ``[UNK]``).
            max_codes: keep at most this many of the most frequent codes (all when ``None``).
        """
        entries = [code for code, count in read_vocab(path) if count >= min_count]
        if max_codes is not None:
            entries = entries[:max_codes]
        if not entries:
            raise ValueError(f"{path}: no {code_type} code has count >= {min_count}; the vocabulary would be empty")
        return cls(code_type, entries)

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CodeVocab) and other.code_type == self.code_type and other.tokens == self.tokens

    def __repr__(self) -> str:
        return f"CodeVocab({self.code_type!r}, {len(self.codes)} codes)"

    def __contains__(self, code: str) -> bool:
        return code in self._ids

    @property
    def num_special_tokens(self) -> int:
        """How many ids at the start of the vocabulary are special tokens (never codes)."""
        return NUM_SPECIAL_TOKENS

    def encode(self, codes: Iterable[str]) -> list[int]:
        """Ids of ``codes``; a code not in the vocabulary becomes ``[UNK]``."""
        ids = self._ids
        return [ids.get(code, UNK_ID) for code in codes]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens (codes or special tokens) of ``ids``."""
        return [self.tokens[i] for i in ids]

    def fingerprint(self) -> str:
        """SHA-256 of the code type and token list: equal fingerprints mean identical id assignments."""
        payload = json.dumps([self.code_type, self.tokens], ensure_ascii=True).encode()
        return hashlib.sha256(payload).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (via a temporary file and a rename)."""
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"code_type": self.code_type, "tokens": self.tokens}, f, indent=0)
            f.write("\n")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike, code_type: str | None = None) -> CodeVocab:
        """Read a vocabulary written by :meth:`save`.

        Args:
            path: the JSON file.
            code_type: when given, the file must hold a vocabulary of this code type.

        Raises:
            VocabMismatchError: the file holds another code type, or its special tokens differ.
        """
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or not isinstance(data.get("tokens"), list) or "code_type" not in data:
            raise ValueError(f"{path}: expected a JSON object with 'code_type' and 'tokens'")
        if code_type is not None and data["code_type"] != code_type:
            raise VocabMismatchError(f"{path}: holds a {data['code_type']!r} vocabulary, expected {code_type!r}")
        tokens = data["tokens"]
        if tuple(tokens[:NUM_SPECIAL_TOKENS]) != SPECIAL_TOKENS:
            raise VocabMismatchError(
                f"{path}: the first tokens must be {list(SPECIAL_TOKENS)}, got {tokens[:NUM_SPECIAL_TOKENS]}"
            )
        return cls(data["code_type"], tokens[NUM_SPECIAL_TOKENS:])
