//! Split computing over a real network: the wire encodings of cut tensors ([`wire`]), the KServe
//! v2 message bodies ([`kserve`]), the tail server ([`server`]), the device client with early exits
//! and fallback ([`client`]) and uplink shaping to bandwidth traces ([`shaping`]).

pub mod client;
pub mod demo;
pub mod kserve;
pub mod live;
pub mod runner;
pub mod server;
pub mod shaping;
pub mod wire;
