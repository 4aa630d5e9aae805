//! Turning failures into Marathon-shaped HTTP answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use marathon::ApiError;
use store::{Rejection, StoreError};

pub struct HttpError(pub ApiError);

pub type ApiResult = Result<Response, HttpError>;

impl From<ApiError> for HttpError {
    fn from(e: ApiError) -> Self {
        HttpError(e)
    }
}

impl From<StoreError> for HttpError {
    fn from(e: StoreError) -> Self {
        tracing::warn!(error = %e, "store write failed");
        HttpError(ApiError::new(503, format!("The cluster could not commit the change: {e}")))
    }
}

impl From<Rejection> for HttpError {
    fn from(r: Rejection) -> Self {
        let msg = r.to_string();
        HttpError(match r {
            Rejection::NoSuchApp(_)
            | Rejection::NoSuchDeployment(_)
            | Rejection::NoSuchNode(_)
            | Rejection::NoSuchToken(_)
            | Rejection::NoSuchSecret(_) => ApiError::not_found(msg),
            Rejection::Locked(ds) => ApiError::conflict(msg, &ds),
            Rejection::AlreadyExists(_)
            | Rejection::BeingDeleted(_)
            | Rejection::NodeRemoved(_)
            | Rejection::Conflict(_)
            | Rejection::TokenExists(_) => ApiError::new(409, msg),
            Rejection::NoServicePort(..) | Rejection::ServicePortTaken(..) | Rejection::ServicePortOutOfRange(..) => {
                ApiError::new(422, msg)
            }
            // Job rejections are answered in Metronome's shapes by `jobs.rs`.
            Rejection::NoSuchJob(_) | Rejection::NoSuchSchedule(..) | Rejection::NoSuchJobRun(..) => {
                ApiError::not_found(msg)
            }
            Rejection::JobExists(_)
            | Rejection::ScheduleExists(..)
            | Rejection::JobRunExists(..)
            | Rejection::JobBusy(_)
            | Rejection::JobHasDependents(..) => ApiError::new(409, msg),
            Rejection::DependencyCycle(_) => ApiError::new(422, msg),
            Rejection::NoClusterCa => ApiError::new(409, msg),
        })
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.to_json())).into_response()
    }
}
