"""Prepares one S3 server for the benchmark and writes presigned URLs for wrk and curl.

Usage: presign.py ENDPOINT REGION ACCESS_KEY SECRET OUT_DIR
Creates the bucket `bench` (when missing), stores COUNT objects of 64 KiB (parallel, bounded)
and writes, into OUT_DIR: get-urls.txt and put-urls.txt (one path?query per line, for wrk),
big-put.url and big-get.url (whole URLs of the 1 GiB object, for curl). URLs are valid for a
day; a URL is bound to its host, so each server gets its own set.
"""

import concurrent.futures
import os
import sys
import urllib.parse

import boto3
import botocore.config

endpoint, region, access_key, secret, out_dir = sys.argv[1:6]
count = int(os.environ.get("SMALL_COUNT", "1000"))
put_urls = int(os.environ.get("PUT_URLS", "20000"))
small = os.urandom(64 * 1024)
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id=access_key,
    aws_secret_access_key=secret,
    region_name=region,
    config=botocore.config.Config(
        s3={"addressing_style": "path"}, signature_version="s3v4", max_pool_connections=16
    ),
)
try:
    s3.create_bucket(Bucket="bench")
except s3.exceptions.ClientError as error:
    if error.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
        raise
with concurrent.futures.ThreadPoolExecutor(max_workers=16) as pool:
    list(pool.map(lambda i: s3.put_object(Bucket="bench", Key=f"small/{i:05d}", Body=small), range(count)))


def presign(method: str, key: str) -> str:
    return s3.generate_presigned_url(method, Params={"Bucket": "bench", "Key": key}, ExpiresIn=86400)


def path_of(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return f"{parts.path}?{parts.query}"


with open(os.path.join(out_dir, "get-urls.txt"), "w") as file:
    for i in range(count):
        file.write(path_of(presign("get_object", f"small/{i:05d}")) + "\n")
with open(os.path.join(out_dir, "put-urls.txt"), "w") as file:
    for i in range(put_urls):
        file.write(path_of(presign("put_object", f"put/{i:06d}")) + "\n")
with open(os.path.join(out_dir, "big-put.url"), "w") as file:
    file.write(presign("put_object", "big/1GiB") + "\n")
with open(os.path.join(out_dir, "big-get.url"), "w") as file:
    file.write(presign("get_object", "big/1GiB") + "\n")
