"""BiLSTM-CRF configuration: a ``transformers`` ``PretrainedConfig`` for concept extraction (NER).

The configuration describes the whole model: where its word vectors come from (a word vocabulary trained from scratch,
or a BERT-family text encoder's token states pooled over each word's pieces), the BiLSTM and the tag set, so that a
``save_pretrained`` directory rebuilds it from ``config.json`` and ``model.safetensors`` (plus the encoder's tokenizer
beside them).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig

POOLINGS = ("first", "mean")


class BiLstmCrfConfig(PretrainedConfig):
    """Hyper-parameters of a BiLSTM-CRF tagger.

    Args:
        words: the word vocabulary of embeddings trained from scratch, in id order (ids 0 and 1 are ``[PAD]`` and
            ``[UNK]``, not listed); ``None`` when word vectors come from a text encoder.
        word_embedding_size: width of the from-scratch word embeddings.
        lowercase: words are looked up lower-cased (from-scratch embeddings).
        encoder_config: the text encoder's ``transformers`` config as a dict (``model_type`` included); ``None`` for
            from-scratch embeddings.
        encoder_trainable_layers: the encoder's last k layers are fine-tuned; the embeddings and the other layers are
            frozen (0: the encoder's states are fixed features).
        pooling: how a word's vector is made from its pieces' states: ``first`` piece or ``mean`` of them.
        encoder_source: where the encoder's weights came from (an export path), recorded for results.
        lstm_hidden_size: width of each direction of the BiLSTM.
        lstm_num_layers: stacked BiLSTM layers.
        dropout: dropout on the word vectors and on the BiLSTM's output.
        id2label / label2id: the IOB2 tags (``O``, ``B-problem``, ...), ``O`` first.
    """

    model_type = "bilstm-crf"

    def __init__(
        self,
        words: list[str] | None = None,
        word_embedding_size: int = 100,
        lowercase: bool = True,
        encoder_config: dict[str, Any] | None = None,
        encoder_trainable_layers: int = 0,
        pooling: str = "first",
        encoder_source: str | None = None,
        lstm_hidden_size: int = 128,
        lstm_num_layers: int = 1,
        dropout: float = 0.1,
        **kwargs: Any,
    ) -> None:
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.words = list(words) if words is not None else None
        self.word_embedding_size = word_embedding_size
        self.lowercase = lowercase
        self.encoder_config = encoder_config
        self.encoder_trainable_layers = encoder_trainable_layers
        self.pooling = pooling
        self.encoder_source = encoder_source
        self.lstm_hidden_size = lstm_hidden_size
        self.lstm_num_layers = lstm_num_layers
        self.dropout = dropout
        super().__init__(**kwargs)

    @property
    def uses_encoder(self) -> bool:
        """Word vectors come from a text encoder (not from-scratch embeddings)."""
        return self.encoder_config is not None
