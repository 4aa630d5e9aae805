//! Marathon's persistent local volumes on this node: one directory per
//! instance and volume, `<data-dir>/volumes/<instance id>/<containerPath>`,
//! created at the instance's first launch and handed to the driver as a host
//! volume, so every task of the instance (the scheduler keeps it on this
//! node) finds what the last one wrote. `persistent.size` is a soft limit:
//! recorded, not enforced (no quota). A volume goes when its app no longer
//! counts the instance as resident (the app was deleted).

use crate::driver::TaskLaunch;
use model::{TaskId, VolumeMode};
use std::path::Path;
use store::Store;

/// Gives each persistent volume of the launch its directory (created).
pub fn prepare(launch: &mut TaskLaunch, root: &Path) -> Result<(), String> {
    let instance = launch.task_id.instance_id().to_string();
    for v in launch.container.volumes.iter_mut().filter(|v| v.persistent.is_some()) {
        let dir = root.join(&instance).join(&v.container_path);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("persistent volume {}: cannot create {}: {e}", v.container_path, dir.display()))?;
        v.host_path = Some(dir.display().to_string());
        v.mode = VolumeMode::Rw;
    }
    Ok(())
}

/// Deletes the volumes of instances their app no longer has.
pub fn sweep(store: &Store, root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else { return };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // An instance id is a task id without its attempt.
        let Ok(task) = TaskId::parse(&format!("{name}._app.1")) else { continue };
        let Some((uuid, _)) = task.instance_attempt() else { continue };
        let kept = store.read(|s| s.apps.get(&task.app_id()).is_some_and(|a| a.resident.contains_key(&uuid)));
        if !kept {
            match std::fs::remove_dir_all(e.path()) {
                Ok(()) => {
                    tracing::info!(instance = %name, "removed the persistent volumes of an instance its app no longer has")
                }
                Err(err) => tracing::warn!(instance = %name, error = %err, "could not remove persistent volumes"),
            }
        }
    }
}
