//! Black-box tests: the real `dataserver` binary on port 0, driven by curl and raw TCP.

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
mod verify;
