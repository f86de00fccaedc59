"""Code and term embeddings learned from shareable summary statistics (``python -m medmplm.embeddings``).

Cai, Huang, Nakada, Zhang and Zhou show that contrastive learning of code and note-concept embeddings amounts to
factorising a pointwise-mutual-information matrix of their co-occurrences, so the embeddings can be learned from
co-occurrence counts alone: counts a hospital can share without sharing patient records.

* :mod:`~medmplm.embeddings.cooccur`: a Ray Data aggregation counting code-code and code-term co-occurrences within
  patients, visits or time windows; small cells suppressed; count directories of several sites add up.
* :mod:`~medmplm.embeddings.terms`: the note terms (the synthetic catalogue's vocabulary or the user's list) and how
  they are found in notes.
* :mod:`~medmplm.embeddings.sppmi`: shifted positive PMI and a randomized truncated SVD -> embeddings (safetensors +
  vocabulary TSV).
* :mod:`~medmplm.embeddings.model_vectors`: a MedM-PLM or contrastive export's code (and term) vectors in the same
  layout.
* :mod:`~medmplm.embeddings.evaluate`: AUC of cosine similarity, known-related pairs against random pairs.

Not to be confused with ``python -m medmplm.embed``, which computes one vector per *visit* with an exported model.
"""
