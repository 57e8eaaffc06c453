"""Vector memories (faiss) for retrieval: label text embeddings or image exemplars."""

from taxonlens.index.memory import KINDS, VectorMemory, recall_at_k

__all__ = ["KINDS", "VectorMemory", "recall_at_k"]
