"""G-BERT-style ontology embedding of clinical codes on torch-geometric's ``GATConv``.

Every node of a code tree (the vocabulary's codes as leaves, and their ancestors) has a learned
vector. Two graph-attention stages turn these into code embeddings (Shang et al. 2019, eqs. 1-2):

* Stage 1, bottom-up: level by level from the deepest up to the root, each internal node is
  recomputed by attention over its direct children (already updated) and itself, so an internal
  node summarises its subtree.
* Stage 2: each code attends over its ancestors (stage-1 outputs) and itself; the results are
  the code embeddings.

As in G-BERT, the root aggregates the chapters too, so every code's embedding depends a little on
the whole vocabulary through the root; its own parent chain dominates through stage 2.

Nodes are identified by their full path from the root, and codes are always separate leaves, so
a category node ``401`` and a category-only code ``042`` never share a vector with another node
of the same name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class OntologyLevel:
    """One stage-1 step: the parents at one depth and the subgraph they aggregate over.

    ``nodes`` are global node ids of the subgraph (parents and their children);
    ``edges`` [2, E] are child -> parent in subgraph-local ids; ``parents_local`` are the
    parents' local ids and ``parents`` their global ids, in the same order.
    """

    nodes: list[int]
    edges: list[tuple[int, int]]
    parents_local: list[int]
    parents: list[int]


@dataclass(frozen=True)
class OntologyTree:
    """Node indexing of a code ontology restricted to a vocabulary's codes.

    Node ids ``0..len(codes)-1`` are the codes (leaves), in vocabulary order; internal nodes
    follow. ``node_names`` gives each node's name: the code for a leaf, the ``|``-joined path
    from the root for an internal node (``ICD9CM|390-459|401``).
    """

    node_names: list[str]
    num_codes: int
    levels: list[OntologyLevel]
    ancestor_edges: list[tuple[int, int]]
    codes_without_ancestors: int

    @property
    def num_nodes(self) -> int:
        """Leaves plus internal nodes."""
        return len(self.node_names)

    def node_id(self, name: str) -> int:
        """Id of a node by name (a code, or an internal node's ``|``-joined path)."""
        return self.node_names.index(name)

    @classmethod
    def build(cls, codes: Sequence[str], ontology: Mapping[str, Sequence[str]]) -> OntologyTree:
        """Index the tree spanned by ``codes`` and their ancestors.

        Args:
            codes: vocabulary codes, in id order (special tokens excluded).
            ontology: code -> ancestors, root first (``medmplm.ontology.read_ontology``).
                A code missing from it gets no ancestors (its embedding is its own vector)
                and is counted in ``codes_without_ancestors``.
        """
        node_names = list(codes)
        depth = [0] * len(codes)
        parent: dict[int, int] = {}
        internal: dict[tuple[str, ...], int] = {}
        ancestor_edges: list[tuple[int, int]] = []
        missing = 0

        def internal_node(path: tuple[str, ...]) -> int:
            if path not in internal:
                internal[path] = len(node_names)
                node_names.append("|".join(path))
                depth.append(len(path) - 1)
                if len(path) > 1:
                    parent[internal[path]] = internal_node(path[:-1])
            return internal[path]

        for leaf, code in enumerate(codes):
            ancestors = tuple(ontology.get(code, ()))
            if not ancestors:
                missing += 1
                continue
            depth[leaf] = len(ancestors)
            parent[leaf] = internal_node(ancestors)
            ancestor_edges.extend((internal_node(ancestors[: i + 1]), leaf) for i in range(len(ancestors)))
        if missing:
            logger.warning("%d of %d codes have no ontology entry; they get no ancestors", missing, len(codes))

        children: dict[int, list[int]] = {}
        for child, par in parent.items():
            children.setdefault(par, []).append(child)
        levels = []
        max_internal_depth = max((depth[n] for n in internal.values()), default=0)
        for level_depth in range(max_internal_depth, -1, -1):
            parents = sorted(n for n in internal.values() if depth[n] == level_depth)
            nodes = sorted({*parents, *(c for p in parents for c in children[p])})
            local = {n: i for i, n in enumerate(nodes)}
            edges = [(local[c], local[p]) for p in parents for c in sorted(children[p])]
            levels.append(OntologyLevel(nodes, edges, [local[p] for p in parents], parents))
        return cls(node_names, len(codes), levels, ancestor_edges, missing)


class OntologyEmbedding(nn.Module):
    """Code embeddings from a two-stage graph attention over the code ontology.

    Args:
        tree: the indexed ontology of the vocabulary's codes.
        head_size: output size per attention head (paper: 75).
        num_heads: attention heads, concatenated (paper: 4, so embeddings are 300-d).
        dropout: attention-coefficient dropout inside ``GATConv``.
    """

    def __init__(self, tree: OntologyTree, head_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.tree = tree
        hidden_size = head_size * num_heads
        self.node_embeddings = nn.Parameter(torch.empty(tree.num_nodes, hidden_size))
        self.stage_one = GATConv(hidden_size, head_size, heads=num_heads, dropout=dropout)
        self.stage_two = GATConv(hidden_size, head_size, heads=num_heads, dropout=dropout)
        # Graph structure is derived from the ontology, not learned; persistent buffers all the same, because
        # transformers builds a model on the meta device when loading and refills only what the weights file holds.
        for i, level in enumerate(tree.levels):
            self.register_buffer(f"level{i}_nodes", torch.tensor(level.nodes, dtype=torch.long), persistent=True)
            self.register_buffer(f"level{i}_edges", _edge_index(level.edges), persistent=True)
            self.register_buffer(
                f"level{i}_parents_local", torch.tensor(level.parents_local, dtype=torch.long), persistent=True
            )
            self.register_buffer(f"level{i}_parents", torch.tensor(level.parents, dtype=torch.long), persistent=True)
        self.register_buffer("ancestor_edges", _edge_index(tree.ancestor_edges), persistent=True)
        nn.init.xavier_uniform_(self.node_embeddings)

    def forward(self) -> torch.Tensor:
        """Embeddings of the vocabulary's codes.

        Returns:
            [num_codes, head_size * num_heads], row i for the i-th code of the vocabulary.
        """
        x = self.node_embeddings
        for i in range(len(self.tree.levels)):
            nodes = getattr(self, f"level{i}_nodes")
            aggregated = F.elu(self.stage_one(x[nodes], getattr(self, f"level{i}_edges")))
            x = x.index_copy(
                0, getattr(self, f"level{i}_parents"), aggregated[getattr(self, f"level{i}_parents_local")]
            )
        # GATConv adds self-loops, so each code also attends to itself.
        codes = F.elu(self.stage_two(x, self.ancestor_edges))
        return codes[: self.tree.num_codes]


def _edge_index(edges: list[tuple[int, int]]) -> torch.Tensor:
    """[2, E] source -> target edge index (``GATConv`` layout)."""
    return torch.tensor(edges, dtype=torch.long).reshape(-1, 2).t().contiguous()
