"""Baselines of the MedM-PLM paper's comparison (Table III) that are not parts of MedM-PLM itself."""

from medmplm.models.baselines.cnn import TextCNNEncoder
from medmplm.models.baselines.logistic import MultiHotLogisticRegression
from medmplm.models.baselines.rnn import VisitGRUEncoder

__all__ = ["MultiHotLogisticRegression", "TextCNNEncoder", "VisitGRUEncoder"]
