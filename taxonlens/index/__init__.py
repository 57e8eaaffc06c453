"""Vector memories (faiss) for retrieval: label text embeddings or image exemplars."""

from taxonlens.index.memory import KINDS, IndexKind, VectorMemory, recall_at_k

__all__ = ["KINDS", "IndexKind", "VectorMemory", "recall_at_k"]
