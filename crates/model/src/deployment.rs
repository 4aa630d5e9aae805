//! A deployment: the change the leader is driving an app towards.

use crate::{AppId, DeploymentId, UnixMillis};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeploymentAction {
    StartApplication,
    StopApplication,
    ScaleApplication,
    RestartApplication,
}

impl DeploymentAction {
    pub fn marathon_name(self) -> &'static str {
        match self {
            DeploymentAction::StartApplication => "StartApplication",
            DeploymentAction::StopApplication => "StopApplication",
            DeploymentAction::ScaleApplication => "ScaleApplication",
            DeploymentAction::RestartApplication => "RestartApplication",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub actions: Vec<(DeploymentAction, AppId)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deployment {
    pub id: DeploymentId,
    /// The target version (the write that started it).
    pub version: UnixMillis,
    pub affected_apps: Vec<AppId>,
    pub steps: Vec<Step>,
    /// 1-based, as Marathon reports it.
    pub current_step: usize,
    pub started_at: UnixMillis,
}
