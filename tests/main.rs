//! Integration tests: the functions against real protocols started in-process (an S3 server,
//! a Lambda Runtime API, HTTP), through the real binaries where a runtime is under test.

mod cleanup;
mod cli;
mod content_tools;
mod deploy_env;
mod doc_links;
mod embedded_preview;
mod events;
mod files_page;
mod forward_once;
mod forward_to_k_sink;
mod forward_to_stream;
mod ftp_upload;
mod gallery;
mod governor;
mod http_service;
mod jobs;
mod kafka_sasl;
mod lambda;
mod latest;
mod layers;
mod live_data;
mod local_events;
mod log_secrets;
mod meemoo_profile;
mod outcomes;
mod progressive_budget;
mod runtime_limits;
mod s3_store;
mod serve_security;
mod sidecar;
mod store_capabilities;
mod support;
mod sweeps;
mod thumbnail_s3;
