//! Split computing over a real network: the KServe v2 message bodies ([`kserve`]), the tail
//! server ([`server`]), the device client with early exits and fallback for `edgecut serve`,
//! Triton and KServe servers ([`client`]), the naming and wire form of a Triton/KServe model
//! repository ([`repository`]), the statistics extension both sides speak ([`statistics`]),
//! uplink shaping to bandwidth traces ([`shaping`]), and the request loop driven by a
//! [`crate::sched::policy::Policy`] ([`runner`], [`live`], [`demo`]). Split tensors are encoded
//! inside the plans ([`crate::engine::PlanIo`]) in the one vocabulary of [`crate::encoding`].

pub mod client;
pub mod demo;
pub mod kserve;
pub mod live;
pub mod repository;
pub mod runner;
pub mod server;
pub mod shaping;
pub mod statistics;
