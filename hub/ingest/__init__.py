"""Ingestion: a document's text out of its bytes (`extract`), cut into passages (`chunking`)."""
