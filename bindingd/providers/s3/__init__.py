"""Providers for S3-compatible stores (R2, AWS S3, MinIO) through aiobotocore."""
