"""Prediction service: FastAPI + ONNX Runtime + a history store (Redis or in-memory). No torch."""
