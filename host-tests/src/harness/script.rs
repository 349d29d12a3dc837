//! Scripted callout replies: what a VM answers to the callouts its guest
//! makes, and when those answers reach the guest.

use crate::abi::state::{CalloutReply, CalloutRequest, GrpcCallRequest, GrpcReply};
use std::collections::HashMap;
use std::sync::Arc;

type CalloutFn = Arc<dyn Fn(&CalloutRequest) -> CalloutReply + Send + Sync>;
type GrpcFn = Arc<dyn Fn(&GrpcCallRequest) -> GrpcReply + Send + Sync>;

/// When scripted callout replies reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Delivery {
    /// Right after the callback that made the call returns.
    #[default]
    Immediate,
    /// Only when the test calls `deliver_callout` / `deliver_scripted`.
    Manual,
}

/// Scripted answers to callouts: per cluster, else a closure.
#[derive(Clone, Default)]
pub(super) struct Script {
    pub(super) by_cluster: HashMap<String, CalloutReply>,
    pub(super) handler: Option<CalloutFn>,
    pub(super) grpc: Option<GrpcFn>,
}

impl Script {
    pub(super) fn answer(&self, r: &CalloutRequest) -> Option<CalloutReply> {
        self.by_cluster
            .get(&r.cluster)
            .cloned()
            .or_else(|| self.handler.as_ref().map(|h| h(r)))
    }

    pub(super) fn answer_grpc(&self, r: &GrpcCallRequest) -> GrpcReply {
        match &self.grpc {
            Some(h) => h(r),
            None => GrpcReply::Status(12, "unimplemented in citygate-host".into()),
        }
    }
}
