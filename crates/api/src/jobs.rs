//! Metronome's `/v1/jobs` and `/v1/queue`: jobs, their schedules and runs.
//! Handlers translate: `metronome` parse -> one `Command` -> `Store::propose`
//! -> `metronome` render; errors take Metronome's shapes.
//!
//! One deliberate difference: `GET /v1/jobs/{id}/runs/{runId}` also answers
//! for a finished run still in the history (Metronome answers 404 at once),
//! so a client following a run sees how it ended.

use crate::context::ApiContext;
use crate::query::Params;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use metronome::{Embed, WireError};
use model::{Job, JobId, JobRunId, RunStatus, RunTrigger};
use rand::Rng;
use serde_json::{json, Value};
use std::sync::Arc;
use store::{Applied, Command, Rejection};

type Ctx = State<Arc<ApiContext>>;

/// A Metronome-shaped failure.
pub struct JobError(WireError);

impl IntoResponse for JobError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(self.0.body)).into_response()
    }
}

impl From<WireError> for JobError {
    fn from(e: WireError) -> Self {
        JobError(e)
    }
}

impl From<store::StoreError> for JobError {
    fn from(e: store::StoreError) -> Self {
        JobError(WireError::message(503, format!("The cluster could not commit the change: {e}")))
    }
}

type JobResult = Result<Response, JobError>;

fn rejection(r: Rejection, job: &JobId) -> JobError {
    let msg = r.to_string();
    let detail = |path: &str| metronome::Detail { path: path.into(), error: msg.clone() };
    JobError(match &r {
        Rejection::NoSuchJob(j) if j == job => WireError::job_not_found(j.as_str()),
        // A missing parent is a broken rule of the job being written.
        Rejection::NoSuchJob(_) | Rejection::DependencyCycle(_) => WireError::invalid(&[detail("/dependencies")]),
        Rejection::NoSuchSchedule(_, s) => WireError::schedule_not_found(s),
        Rejection::NoSuchJobRun(j, run) => WireError::run_not_found(j.as_str(), &run.0),
        _ => WireError::message(409, msg),
    })
}

fn job_id(id: &str, request_path: &str) -> Result<JobId, JobError> {
    JobId::parse(id).map_err(|_| JobError(WireError::malformed(format!("Invalid job id '{id}'"), request_path)))
}

fn embed(q: &Option<String>) -> Result<Embed, JobError> {
    let values = Params::parse(q.as_deref()).all("embed");
    Embed::parse(values.iter().map(String::as_str)).map_err(|m| JobError(WireError::message(400, m)))
}

fn read_job(ctx: &ApiContext, id: &JobId) -> Result<Job, JobError> {
    ctx.store.read(|s| s.jobs.get(id).cloned()).ok_or_else(|| JobError(WireError::job_not_found(id.as_str())))
}

/// `GET /v1/jobs`.
pub async fn list(State(ctx): Ctx, RawQuery(q): RawQuery) -> JobResult {
    let embed = embed(&q)?;
    let now = ctx.now();
    let body = ctx.store.read(|s| s.jobs.values().map(|j| metronome::render_job(j, embed, now)).collect::<Vec<_>>());
    Ok(Json(body).into_response())
}

/// `POST /v1/jobs`: a job with its schedules.
pub async fn create(State(ctx): Ctx, body: Bytes) -> JobResult {
    let input = metronome::parse_job(&body, None, "/v1/jobs")?;
    let id = input.job.id.clone();
    let cmd = Command::PutJob {
        job: input.job,
        schedules: input.schedules.or(Some(vec![])),
        at: ctx.now(),
        create_only: true,
    };
    match ctx.store.propose(cmd).await? {
        Applied::Job(j) => {
            Ok((StatusCode::CREATED, Json(metronome::render_job(&j, Embed::default(), ctx.now()))).into_response())
        }
        Applied::Rejected(r) => Err(rejection(r, &id)),
        other => Err(unexpected(other)),
    }
}

fn unexpected(a: Applied) -> JobError {
    JobError(WireError::message(500, format!("unexpected store answer: {a:?}")))
}

/// `GET /v1/jobs/{id}`.
pub async fn get_job(State(ctx): Ctx, Path(id): Path<String>, RawQuery(q): RawQuery) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let embed = embed(&q)?;
    let job = read_job(&ctx, &id)?;
    Ok(Json(metronome::render_job(&job, embed, ctx.now())).into_response())
}

/// `PUT /v1/jobs/{id}`: replaces the job; the path id wins and the body's
/// schedules are ignored, as in Metronome (they have their own endpoints).
pub async fn put_job(State(ctx): Ctx, Path(id): Path<String>, body: Bytes) -> JobResult {
    let path = format!("/v1/jobs/{id}");
    let id = job_id(&id, &path)?;
    let input = metronome::parse_job(&body, Some(id.as_str()), &path)?;
    let cmd = Command::PutJob { job: input.job, schedules: None, at: ctx.now(), create_only: false };
    match ctx.store.propose(cmd).await? {
        Applied::Job(j) => Ok(Json(metronome::render_job(&j, Embed::default(), ctx.now())).into_response()),
        Applied::Rejected(r) => Err(rejection(r, &id)),
        other => Err(unexpected(other)),
    }
}

/// `DELETE /v1/jobs/{id}?stopCurrentJobRuns=true`.
pub async fn delete_job(State(ctx): Ctx, Path(id): Path<String>, RawQuery(q): RawQuery) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let stop_runs =
        Params::parse(q.as_deref()).get("stopCurrentJobRuns").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    match ctx.store.propose(Command::RemoveJob { id: id.clone(), stop_runs, at: ctx.now() }).await? {
        Applied::Job(j) => Ok(Json(metronome::render_job(&j, Embed::default(), ctx.now())).into_response()),
        Applied::Rejected(r) => Err(rejection(r, &id)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/jobs/{id}/runs`: the active runs.
pub async fn list_runs(State(ctx): Ctx, Path(id): Path<String>) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let job = read_job(&ctx, &id)?;
    let runs: Vec<Value> = job.runs.values().map(metronome::render_run).collect();
    Ok(Json(runs).into_response())
}

/// A manual run's id: the time and five random letters or digits, as Metronome's.
fn new_run_id(at: model::UnixMillis) -> JobRunId {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    let suffix: String = (0..5).map(|_| ALPHABET[rng.gen_range(0..ALPHABET.len())] as char).collect();
    JobRunId::new(at, &suffix)
}

/// `POST /v1/jobs/{id}/runs`: start a run now.
pub async fn start_run(State(ctx): Ctx, Path(id): Path<String>) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let at = ctx.now();
    let cmd = Command::StartJobRun { job: id.clone(), run: new_run_id(at), at, trigger: RunTrigger::Manual };
    match ctx.store.propose(cmd).await? {
        Applied::JobRun(r) => Ok((StatusCode::CREATED, Json(metronome::render_run(&r))).into_response()),
        Applied::Rejected(r) => Err(rejection(r, &id)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/jobs/{id}/runs/{runId}` (active, or finished and in the history).
pub async fn get_run(State(ctx): Ctx, Path((id, run)): Path<(String, String)>) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let job = read_job(&ctx, &id)?;
    let run_id = JobRunId(run.clone());
    let found = job.runs.get(&run_id).or_else(|| job.history.finished.iter().find(|r| r.id == run_id));
    match found {
        Some(r) => Ok(Json(metronome::render_run(r)).into_response()),
        None => Err(JobError(WireError::run_not_found(id.as_str(), &run))),
    }
}

/// `POST /v1/jobs/{id}/runs/{runId}/actions/stop`.
pub async fn stop_run(State(ctx): Ctx, Path((id, run)): Path<(String, String)>) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let cmd =
        Command::StopJobRun { job: id.clone(), run: JobRunId(run), at: ctx.now(), reason: "stopped on request".into() };
    match ctx.store.propose(cmd).await? {
        Applied::JobRun(r) => Ok(Json(metronome::render_run(&r)).into_response()),
        Applied::Rejected(r) => Err(rejection(r, &id)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/jobs/{id}/schedules`.
pub async fn list_schedules(State(ctx): Ctx, Path(id): Path<String>) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let job = read_job(&ctx, &id)?;
    let now = ctx.now();
    let body: Vec<Value> = job.schedules.iter().map(|s| metronome::render_schedule(s, now)).collect();
    Ok(Json(body).into_response())
}

async fn write_schedule(ctx: &ApiContext, id: String, sid: Option<String>, body: Bytes) -> JobResult {
    let path = format!("/v1/jobs/{id}/schedules");
    let id = job_id(&id, &path)?;
    let spec = metronome::parse_schedule(&body, sid.as_deref(), &path)?;
    let sched_id = spec.id.clone();
    let create_only = sid.is_none();
    let cmd = Command::PutSchedule { job: id.clone(), schedule: spec, at: ctx.now(), create_only };
    match ctx.store.propose(cmd).await? {
        Applied::Rejected(r) => Err(rejection(r, &id)),
        _ => {
            let job = read_job(ctx, &id)?;
            let s = job.schedule(&sched_id).ok_or_else(|| JobError(WireError::schedule_not_found(&sched_id)))?;
            let status = if create_only { StatusCode::CREATED } else { StatusCode::OK };
            Ok((status, Json(metronome::render_schedule(s, ctx.now()))).into_response())
        }
    }
}

/// `POST /v1/jobs/{id}/schedules`.
pub async fn create_schedule(State(ctx): Ctx, Path(id): Path<String>, body: Bytes) -> JobResult {
    write_schedule(&ctx, id, None, body).await
}

/// `PUT /v1/jobs/{id}/schedules/{scheduleId}` (the path id wins).
pub async fn put_schedule(State(ctx): Ctx, Path((id, sid)): Path<(String, String)>, body: Bytes) -> JobResult {
    write_schedule(&ctx, id, Some(sid), body).await
}

/// `GET /v1/jobs/{id}/schedules/{scheduleId}`.
pub async fn get_schedule(State(ctx): Ctx, Path((id, sid)): Path<(String, String)>) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    let job = read_job(&ctx, &id)?;
    match job.schedule(&sid) {
        Some(s) => Ok(Json(metronome::render_schedule(s, ctx.now())).into_response()),
        None => Err(JobError(WireError::schedule_not_found(&sid))),
    }
}

/// `DELETE /v1/jobs/{id}/schedules/{scheduleId}`: 200 with an empty body.
pub async fn delete_schedule(State(ctx): Ctx, Path((id, sid)): Path<(String, String)>) -> JobResult {
    let id = job_id(&id, "/v1/jobs")?;
    match ctx.store.propose(Command::RemoveSchedule { job: id.clone(), id: sid }).await? {
        Applied::Rejected(r) => Err(rejection(r, &id)),
        _ => Ok(StatusCode::OK.into_response()),
    }
}

/// `GET /v1/queue`: runs waiting for their task, as Metronome's
/// `[{jobId, runs: [{runId}]}]`; each run also says why it waits (`reason`).
pub async fn queue(State(ctx): Ctx) -> JobResult {
    let now = ctx.now();
    let body = ctx.store.read(|s| {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(now.0 as u64);
        let waiting = scheduler::plan(s, now, &mut rng).waiting_runs;
        let mut out: Vec<Value> = Vec::new();
        for job in s.jobs.values() {
            let runs: Vec<Value> = job
                .runs
                .values()
                .filter(|r| r.status == RunStatus::Starting)
                .map(|r| {
                    let why = waiting.iter().find(|w| w.run.run == r.id && w.run.job == r.job);
                    let reason = why.map(|w| explain(&w.why, now)).unwrap_or_else(|| "being placed".into());
                    json!({"runId": r.id.0, "reason": reason})
                })
                .collect();
            if !runs.is_empty() {
                out.push(json!({"jobId": job.spec.id.as_str(), "runs": runs}));
            }
        }
        out
    });
    Ok(Json(body).into_response())
}

fn explain(w: &scheduler::Waiting, now: model::UnixMillis) -> String {
    let u = scheduler::Unplaced { app: model::AppId::root(), count: 1, why: w.clone() };
    u.explain(now)
}
