"""Retrieval: text analysis, BM25 over the store's own index, optional embeddings, and hybrid ranking.

One component, written once: memory recall and document search both rank with `index.SearchIndex`.
"""
