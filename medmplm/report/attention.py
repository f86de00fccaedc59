"""``python -m medmplm.report.attention``: which words of a visit's note each of its codes attends to (paper Fig. 4).

MedM-PLM's cross-modal module lets every code of a visit attend over the note's word pieces (one softmax over the
note's tokens per code, eq. 6). For one admission of a prepared directory this draws those weights as a heatmap (rows:
the visit's diagnosis and medication codes; columns: the note's words, WordPiece ``##`` pieces merged by summing their
weights) beside a list of each code's most attended words. The module has a single layer and a single head, so there
is no layer or head to choose.

The figure holds note text: on real data it is protected health information. The command says so on stderr, writes
nothing but ``--out`` (under a temporary name, readable by its owner only, then renamed), and prints counts and
identifiers, never the note or its words.

Examples::

    python -m medmplm.report.attention --model runs/<pretrain-run>/export --prepared DIR --hadm-id 145834 --out f.png
    python -m medmplm.report.attention --model DIR --prepared DIR --hadm-id 145834 --out f.pdf --top-words 8
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from medmplm.console import configure_output

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from medmplm.models import MedMPLMModel

# Named, not __name__: run with -m, the module is __main__, outside the "medmplm" logger configure_output sets up.
logger = logging.getLogger("medmplm.report.attention")

# Each code column of a visit record: (record column, VisitFeaturizer key prefix, row label prefix).
CODE_COLUMNS = (("diagnoses", "diag", "dx"), ("medications", "med", "med"))
# How a WordPiece tokenizer (BERT, ClinicalBERT, the project's own) marks a piece that continues the previous one.
CONTINUATION_PREFIX = "##"
DEFAULT_TOP_WORDS = 5
DEFAULT_MAX_WORDS = 60
CAPTION = (
    "Code-to-text attention of the cross-modal module: each row is a code's softmax over the note's tokens ([CLS] "
    "and [SEP] included, padding left out) and sums to 1. Word pieces (##) are merged into words by summing their "
    "weights. Right: each code's most attended words ([CLS]/[SEP] not ranked; a repeated word once, at its most "
    "attended occurrence)."
)


@dataclass
class AttentionMap:
    """Code-to-text attention weights of one visit.

    Attributes:
        hadm_id: the admission.
        code_labels: one per row: ``dx:<ICD-9>`` then ``med:<ATC-3>``, each type in record order (its first
            ``max_codes`` distinct codes, as featurised); a code outside the model's vocabulary, which the model sees
            as [UNK], is marked ``(unknown)``.
        tokens: one per column: the note's word pieces as the model read them, [CLS] and [SEP] included, no padding.
        special: [tokens] True on [CLS] and [SEP].
        weights: [codes, tokens] each code's attention over the tokens; every row sums to 1.
        text_truncated: the note was cut at the model's ``text_max_length`` tokens.
    """

    hadm_id: int
    code_labels: list[str]
    tokens: list[str]
    special: np.ndarray
    weights: np.ndarray
    text_truncated: bool

    def words(self) -> tuple[list[str], np.ndarray, np.ndarray]:
        """Word pieces merged into words: (words, [codes, words] weights summed over each word's pieces,
        [words] special)."""
        continues = np.array(
            [i > 0 and not self.special[i] and t.startswith(CONTINUATION_PREFIX) for i, t in enumerate(self.tokens)],
            dtype=bool,
        )
        starts = np.flatnonzero(~continues)
        ends = [*starts[1:], len(self.tokens)]
        words = [
            self.tokens[start] + "".join(t[len(CONTINUATION_PREFIX) :] for t in self.tokens[start + 1 : end])
            for start, end in zip(starts, ends, strict=True)
        ]
        return words, np.add.reduceat(self.weights, starts, axis=1), self.special[starts]

    def top_words(self, k: int) -> list[list[tuple[str, float]]]:
        """Each code's ``k`` most attended distinct words with their weights, most attended first ([CLS] and [SEP]
        left out; a word repeated in the note counts at its most attended occurrence)."""
        words, weights, special = self.words()
        ranked_per_code = []
        for row in weights:
            ranked: dict[str, float] = {}
            for column in np.argsort(-row, kind="stable"):
                if len(ranked) == k:
                    break
                if not special[column] and words[column] not in ranked:
                    ranked[words[column]] = float(row[column])
            ranked_per_code.append(list(ranked.items()))
        return ranked_per_code


def dotted_icd9(code: str) -> str:
    """A diagnosis code in its usual dotted form: an undotted ICD-9-CM code (``4280`` -> ``428.0``, ``E8497`` ->
    ``E849.7``), bare or with its system (``ICD9CM:4280`` -> ``428.0``), or an ICD-10-CM one (``ICD10CM:I2510`` ->
    ``I25.10``); anything else unchanged."""
    from medmplm.ontology import ICD9CM, ICD10CM, OntologyError, is_icd9_diagnosis, split_system_code

    system, bare = None, code
    if ":" in code:
        try:
            system, bare = split_system_code(code)
        except OntologyError:
            return code
    if system == ICD10CM:
        return bare if len(bare) <= 3 else f"{bare[:3]}.{bare[3:]}"
    if system not in (None, ICD9CM) or not is_icd9_diagnosis(bare):
        return code
    category_len = 4 if bare.startswith("E") else 3
    return bare if len(bare) <= category_len else f"{bare[:category_len]}.{bare[category_len:]}"


def check_visit(visit: Mapping[str, Any], where: str = "") -> None:
    """Check that a visit record has what an attention map needs: a note and at least one code.

    Args:
        visit: the visit record.
        where: said after the hadm_id in the message (e.g. `` (train split of DIR)``).

    Raises:
        ValueError: naming the hadm_id and what is missing.
    """
    from medmplm.data.features import clean_note_text

    note = visit["note_text"]
    if not isinstance(note, str) or not clean_note_text(note):
        raise ValueError(f"hadm_id {visit['hadm_id']}{where} has no note: there is no text for its codes to attend to")
    if not visit["diagnoses"] and not visit["medications"]:
        raise ValueError(
            f"hadm_id {visit['hadm_id']}{where} has no diagnosis or medication code: there is no row to draw"
        )


def find_visit(prepared_dir: str | os.PathLike, hadm_id: int) -> tuple[str, dict[str, Any]]:
    """The split holding admission ``hadm_id`` of a prepared directory, and its visit record (``hadm_id``,
    ``note_text``, ``diagnoses``, ``medications``). Only that row is read (a filtered Parquet scan), not the splits.

    Raises:
        PreparedDataError: the directory is not a readable prepared directory.
        LookupError: no split holds ``hadm_id``; the message names it and the directory.
    """
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from medmplm.data.schema import SPLITS, VISITS_DIR
    from medmplm.tasks.base import PreparedDataError, read_manifest

    read_manifest(prepared_dir)
    for split in SPLITS:
        split_dir = Path(prepared_dir) / VISITS_DIR / split
        files = sorted(split_dir.glob("*.parquet"))
        if not files:
            raise PreparedDataError(f"{split_dir}: no visit files (*.parquet)")
        rows = ds.dataset(files, format="parquet").to_table(
            columns=["hadm_id", "note_text", *(column for column, _, _ in CODE_COLUMNS)],
            filter=pc.field("hadm_id") == hadm_id,
        )
        if rows.num_rows:
            return split, rows.slice(0, 1).to_pylist()[0]
    raise LookupError(f"hadm_id {hadm_id} is in no split of {prepared_dir}")


def _one_visit_batch(visit: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """A visit record as the one-row numpy batch ``VisitFeaturizer`` takes (list columns as object arrays)."""
    batch = {}
    for name in ("note_text", *(column for column, _, _ in CODE_COLUMNS)):
        column = np.empty(1, dtype=object)
        column[0] = visit[name]
        batch[name] = column
    batch["hadm_id"] = np.array([visit["hadm_id"]], dtype=np.int64)
    return batch


def attention_map(model: MedMPLMModel, visit: Mapping[str, Any]) -> AttentionMap:
    """The code-to-text attention of one visit: featurised as training does (``VisitFeaturizer.from_model``), run
    through ``model`` in eval mode (its training mode is restored afterwards).

    Args:
        model: a :class:`~medmplm.models.MedMPLMModel` with its tokenizer attached (``from_pretrained`` attaches it).
        visit: a visit record with ``hadm_id``, ``note_text``, ``diagnoses`` and ``medications``.

    Raises:
        ValueError: the visit has no note or no code (:func:`check_visit`).
    """
    import torch

    from medmplm.data.features import VisitFeaturizer
    from medmplm.data.vocab import UNK_ID

    check_visit(visit)
    featurizer = VisitFeaturizer.from_model(model)
    features = featurizer(_one_visit_batch(visit))
    inputs = {
        name: torch.from_numpy(features[name]).to(model.device)
        for name in ("input_ids", "attention_mask", "has_note", "diag_ids", "diag_mask", "med_ids", "med_mask")
    }
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            code_to_text = model(**inputs, output_attentions=True).code_to_text_attentions[0].float().cpu().numpy()
    finally:
        model.train(was_training)

    # Rows of code_to_text: diagnosis [CLS], diagnoses, medication [CLS], medications; [CLS] rows are not codes.
    rows, labels = [], []
    offset = 0
    for column, key, label in CODE_COLUMNS:
        ids, mask = features[f"{key}_ids"][0], features[f"{key}_mask"][0]
        # The featuriser keeps a visit's distinct codes of a type in record order, the first max_codes of them.
        codes = list(dict.fromkeys(visit[column]))[: int(mask[1:].sum())]
        for position, code in enumerate(codes, start=1):
            name = dotted_icd9(code) if column == "diagnoses" else code
            labels.append(f"{label}:{name}" + (" (unknown)" if ids[position] == UNK_ID else ""))
            rows.append(offset + position)
        offset += len(ids)
    token_ids, columns, special = note_columns(featurizer, features["input_ids"][0], features["attention_mask"][0])
    attended = np.flatnonzero(columns >= 0)
    weights = np.zeros((len(rows), len(token_ids)), dtype=np.float64)
    np.add.at(weights, (slice(None), columns[attended]), code_to_text[rows][:, attended])
    return AttentionMap(
        hadm_id=int(visit["hadm_id"]),
        code_labels=labels,
        tokens=model.tokenizer.convert_ids_to_tokens(token_ids),
        special=special,
        weights=weights,
        text_truncated=bool(features["text_truncated"][0]),
    )


def note_columns(featurizer: Any, input_ids: np.ndarray, attention_mask: np.ndarray) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The note as the map's columns, from one visit's featurised text of K windows.

    A note read in overlapping windows holds some tokens twice, and one [CLS] and [SEP] per window. The map has one
    column per note token, in note order, between one [CLS] and one [SEP] column; the attention a code gives a token
    in several windows (or to the windows' [CLS] / [SEP]) is summed into its column, so each row still sums to 1.

    Returns:
        (the columns' token ids, [K * L] the column of each input position (-1 where the mask is 0), [columns] True
        on the special-token columns).
    """
    length = featurizer.text_max_length
    prefix, suffix = featurizer.num_prefix_tokens, featurizer.num_suffix_tokens
    note_position = {}
    placed: list[tuple[str, int, int]] = []
    for position in np.flatnonzero(attention_mask):
        window, offset = divmod(int(position), length)
        window_end = window * length + int(attention_mask[window * length : (window + 1) * length].sum())
        if offset < prefix:
            placed.append(("prefix", offset, position))
        elif position >= window_end - suffix:
            placed.append(("suffix", int(position) - (window_end - suffix), position))
        else:
            # Windows start `stride` note tokens apart (medmplm.data.features); head_tail reads one window.
            at = window * featurizer.stride + offset - prefix
            note_position.setdefault(at, int(input_ids[position]))
            placed.append(("note", at, position))
    notes = sorted(note_position)
    column_of_note = {at: prefix + i for i, at in enumerate(notes)}
    token_ids = [int(input_ids[p]) for p in range(prefix)] + [note_position[at] for at in notes]
    first_window_end = int(attention_mask[:length].sum())
    token_ids += [int(input_ids[p]) for p in range(first_window_end - suffix, first_window_end)]
    columns = np.full(len(attention_mask), -1, dtype=np.int64)
    for kind, at, position in placed:
        columns[position] = at if kind == "prefix" else column_of_note[at] if kind == "note" else prefix + len(notes) + at
    special = np.zeros(len(token_ids), dtype=bool)
    special[:prefix] = True
    special[prefix + len(notes) :] = True
    return token_ids, columns, special


def draw_attention_map(
    attention: AttentionMap, top_words: int = DEFAULT_TOP_WORDS, max_words: int = DEFAULT_MAX_WORDS
) -> Figure:
    """A figure of an attention map: the heatmap (codes x words) and, on each code's row, its ``top_words`` most
    attended words. A note of more than ``max_words`` words shows its ``max_words`` most attended ones (a word's
    strongest weight over the codes), in note order, and the title says so. No pyplot: the figure has its own Agg
    canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    words, weights, _ = attention.words()
    shown = np.arange(len(words))
    if len(words) > max_words:
        shown = np.sort(np.argsort(-weights.max(axis=0), kind="stable")[:max_words])
    num_codes = len(attention.code_labels)
    heatmap_width = max(4.0, 0.2 * len(shown))
    list_width = 1.0 * top_words
    figure_width = heatmap_width + list_width + 2.5
    figure = Figure(figsize=(figure_width, 2.5 + 0.3 * num_codes), layout="constrained")
    FigureCanvasAgg(figure)
    heatmap_axes, list_axes = figure.subplots(
        1, 2, sharey=True, gridspec_kw={"width_ratios": [heatmap_width, list_width]}
    )
    image = heatmap_axes.imshow(weights[:, shown], aspect="auto", cmap="viridis", vmin=0.0, interpolation="nearest")
    heatmap_axes.set_xticks(range(len(shown)), [words[i] for i in shown], rotation=90, fontsize=7)
    heatmap_axes.set_yticks(range(num_codes), attention.code_labels, fontsize=8)
    heatmap_axes.set_xlabel("note words" + (" (most attended, in note order)" if len(shown) < len(words) else ""))
    figure.colorbar(image, ax=heatmap_axes, label="attention weight", shrink=0.8)
    for row, ranked in enumerate(attention.top_words(top_words)):
        list_axes.text(0.0, row, "  ".join(f"{word} {weight:.2f}" for word, weight in ranked), va="center", fontsize=7)
    list_axes.set_xlim(0.0, 1.0)
    list_axes.set_title(f"top {top_words} words", fontsize=9)
    list_axes.axis("off")

    title = f"hadm_id {attention.hadm_id}: code-to-text attention, {num_codes} codes x {len(words)} words"
    if len(shown) < len(words):
        title += f", the {len(shown)} most attended words shown"
    if attention.text_truncated:
        title += f" (note cut at {len(attention.tokens)} tokens)"
    figure.suptitle(title, fontsize=10)
    # About 15 characters of 7-point text to an inch; constrained layout does not wrap text itself.
    figure.supxlabel(textwrap.fill(CAPTION, width=int(15 * figure_width)), fontsize=7)
    return figure


def save_figure(figure: Figure, out: Path) -> None:
    """Write ``figure`` to ``out`` (format from its suffix): under a temporary name beside it, readable by its owner
    only (it holds note text), then renamed into place, so an interrupted run leaves no partial figure."""
    descriptor, temporary = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            figure.savefig(handle, format=out.suffix[1:].lower(), dpi=150)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _check_arguments(args: argparse.Namespace) -> None:
    """The checks that need neither torch nor the data: paths, the model's family, the figure format.

    Raises:
        DataSourceError: naming the option and the path.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from medmplm.tasks.data_source import (
        MODEL_CONFIG_FILE,
        DataSourceError,
        check_model_dir,
        check_prepared_dir,
        check_vocabularies,
        is_remote,
    )

    check_model_dir(args.model, "--model")
    model_type = json.loads((Path(args.model) / MODEL_CONFIG_FILE).read_text(encoding="utf-8")).get("model_type")
    if model_type != "medmplm":
        raise DataSourceError(f"--model: {args.model} is a {model_type} model; the attention map needs a medmplm one")
    if is_remote(args.prepared):
        raise DataSourceError(f"--prepared: {args.prepared} is remote; pass a local prepared directory")
    check_prepared_dir(args.prepared, "--prepared")
    check_vocabularies(args.model, args.prepared, "--model")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise DataSourceError(f"--out: {out.parent} does not exist; create it or choose another --out")
    formats = FigureCanvasAgg.get_supported_filetypes()
    if out.suffix[1:].lower() not in formats:
        raise DataSourceError(f"--out: {out} has no figure suffix; use one of {', '.join(sorted(formats))}")
    if args.top_words < 1 or args.max_words < 1:
        raise DataSourceError("--top-words and --max-words must be at least 1")


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(
        prog="python -m medmplm.report.attention",
        description="Draw the code-to-text cross-modal attention of one admission (MedM-PLM paper, Fig. 4). The "
        "figure shows note text: treat it as protected health information.",
    )
    parser.add_argument("--model", required=True, help="a MedM-PLM export (pretraining export or initial_model)")
    parser.add_argument("--prepared", required=True, help="the prepared directory the model was pretrained on")
    parser.add_argument("--hadm-id", type=int, required=True, help="the admission to draw (any split)")
    parser.add_argument("--out", required=True, help="the figure file (.png, .pdf, .svg, ...)")
    parser.add_argument("--top-words", type=int, default=DEFAULT_TOP_WORDS, help="words listed per code")
    parser.add_argument(
        "--max-words", type=int, default=DEFAULT_MAX_WORDS, help="heatmap columns at most (the most attended words)"
    )
    parser.add_argument("--verbose", action="store_true", help="show other libraries' output")
    args = parser.parse_args(argv)
    configure_output(args.verbose)

    from medmplm.tasks.base import PreparedDataError
    from medmplm.tasks.data_source import DataSourceError, is_synthetic, synthetic_notice

    try:
        _check_arguments(args)
        split, visit = find_visit(args.prepared, args.hadm_id)
        check_visit(visit, f" ({split} split of {args.prepared})")
    except (DataSourceError, PreparedDataError, LookupError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if is_synthetic(args.prepared):
        print(synthetic_notice(args.prepared), flush=True)
    print(f"Attention map of hadm_id {args.hadm_id} ({split} split of {args.prepared}) with {args.model}", flush=True)
    print(f"  figure: {args.out}", flush=True)
    print(
        f"warning: {args.out} shows note text of hadm_id {args.hadm_id}: treat it as protected health information",
        file=sys.stderr,
        flush=True,
    )

    from medmplm.models import MedMPLMModel

    model = MedMPLMModel.from_pretrained(args.model)
    attention = attention_map(model, visit)
    words, _, _ = attention.words()
    logger.info(
        "hadm_id %d: %d codes, %d note tokens (%d words)%s",
        attention.hadm_id,
        len(attention.code_labels),
        len(attention.tokens),
        len(words),
        ", note truncated" if attention.text_truncated else "",
    )
    save_figure(draw_attention_map(attention, args.top_words, args.max_words), Path(args.out))
    print(f"Attention map: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
