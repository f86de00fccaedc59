"""Synthetic MIMIC-III v1.4 and MIMIC-IV data (and an i2b2-2010-style NER corpus) from a latent patient model.

For users without MIMIC access: ``generate_mimic3`` writes the MIMIC-III tables the rest of the
project reads, in the release's file names, columns, types and quirks; ``generate_mimic4`` the same
patients in MIMIC-IV's hosp/ and note/ layout, ICD-9 and ICD-10 eras mixed; ``generate_ner_corpus``
writes a concept-extraction corpus drawn from the same clinical vocabulary.
"""

from medmplm.synthetic.generate import generate_mimic3
from medmplm.synthetic.mimic4 import generate_mimic4
from medmplm.synthetic.ner import generate_ner_corpus

__all__ = ["generate_mimic3", "generate_mimic4", "generate_ner_corpus"]
