//! Black-box tests: the real `dataserver` binary on port 0, driven by curl, raw TCP and an S3
//! client (object_store's `AmazonS3`).

mod access;
mod client_lib;
mod ds;
mod fits_client;
mod fits_writer;
mod harness;
mod lifecycle;
mod limits;
mod objects;
mod ranges;
mod s3_api;
mod verify;
