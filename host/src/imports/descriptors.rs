//! `resources.max_open_files`: the host descriptors one instance holds.
//!
//! A guest that calls `wasi:filesystem` directly gets past the WASI
//! adapter's own cap of 124 files, and every `open-at` that succeeds is a
//! new descriptor of the host's process. So `open-at` is wrapped: a guest
//! holding its environment's limit gets `too-many-open-files` instead, and a
//! descriptor's drop gives its place back. (Preopened directories and
//! directory listings hold no descriptor of their own: wasmtime-wasi shares
//! the preopen's and reads a listing whole.) The wrappers shadow
//! wasmtime-wasi's own definitions of the two items and then call them.

use std::collections::HashSet;

use wasmtime::component::{Linker, Resource, ResourceType};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use super::HostState;
use crate::model::{Failure, FailureKind, LimitHit};

/// The `wasi:filesystem/types` interface whose items are wrapped (any 0.2.x
/// a guest imports resolves to it).
const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// The descriptors an instance opened and holds, and how many it may.
pub struct OpenFiles {
    /// Table entries of the descriptors `open-at` made and the guest holds.
    held: HashSet<u32>,
    /// The most it may hold at once.
    max: u32,
}

impl OpenFiles {
    /// None open, at most `max`.
    pub fn new(max: u32) -> Self {
        OpenFiles { held: HashSet::new(), max }
    }

    /// The limit from now on (a warm instance's next call).
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    /// Descriptors held now.
    pub fn held(&self) -> usize {
        self.held.len()
    }
}

/// Wraps `open-at` and the descriptor's drop in `linker`, which must already
/// hold wasmtime-wasi's `wasi:filesystem`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    types.func_wrap_async(
        "[method]descriptor.open-at",
        |mut store,
         (dir, path_flags, path, open_flags, flags): (
            Resource<Descriptor>,
            PathFlags,
            String,
            OpenFlags,
            DescriptorFlags,
        )| {
            Box::new(async move {
                let files = &store.data().files;
                if files.held.len() >= files.max as usize {
                    return Err(too_many(files.max));
                }
                let opened = {
                    let mut view = store.data_mut().filesystem();
                    HostDescriptor::open_at(&mut view, dir, path_flags, path, open_flags, flags).await
                };
                match opened {
                    Ok(file) => {
                        store.data_mut().files.held.insert(file.rep());
                        Ok((Ok::<_, ErrorCode>(file),))
                    }
                    Err(error) => Ok((Err(error.downcast()?),)),
                }
            })
        },
    )?;
    types.resource_async("descriptor", ResourceType::host::<Descriptor>(), |mut store, rep| {
        Box::new(async move {
            let state = store.data_mut();
            state.files.held.remove(&rep);
            HostDescriptor::drop(&mut state.filesystem(), Resource::new_own(rep))
        })
    })?;
    linker.allow_shadowing(false);
    Ok(())
}

fn too_many(max: u32) -> wasmtime::Error {
    wasmtime::Error::new(LimitHit(Failure {
        kind: FailureKind::TooManyOpenFiles,
        message: format!(
            "the guest held {max} open files and directories, the `resources.max_open_files` of its environment, and opened another; close what it no longer needs, or raise the limit"
        ),
        retryable: false,
    }))
}
