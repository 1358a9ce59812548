"""Search with a trained model: the encode API, gallery indexes, the search service and its web page."""
