//! `resources.max_open_files`: the host descriptors one instance holds.
//!
//! A guest that calls `wasi:filesystem` directly gets past the WASI
//! adapter's own cap of 124 files, and every `open-at` that succeeds is a
//! new descriptor of the host's process. So `open-at` is wrapped: the file
//! it opened is kept track of (weakly) for as long as anything of the
//! guest's holds it (its descriptor, or a stream over it that outlives the
//! descriptor), and a guest holding its environment's limit gets
//! `too-many-open-files` instead. (Preopened directories and directory
//! listings hold no descriptor of their own: wasmtime-wasi shares the
//! preopen's and reads a listing whole.) The wrapper shadows wasmtime-wasi's
//! own definition and calls it. The same record lets the disk measurement
//! count files the guest removed but holds open ([`HeldFiles`]).

use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::Descriptor as Opened;
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    Descriptor, DescriptorFlags, ErrorCode, HostDescriptor, OpenFlags, PathFlags,
};

use super::HostState;
use crate::model::{Failure, FailureKind, LimitHit};
use crate::sandbox::usage::HeldFiles;

/// The `wasi:filesystem/types` interface whose items are wrapped (any 0.2.x
/// a guest imports resolves to it).
const TYPES: &str = "wasi:filesystem/types@0.2.12";

/// The files an instance's guest opened and holds, and how many it may.
pub struct OpenFiles {
    held: HeldFiles,
    max: u32,
}

impl OpenFiles {
    /// None open, at most `max`.
    pub fn new(max: u32) -> Self {
        OpenFiles { held: HeldFiles::default(), max }
    }

    /// The limit from now on (a warm instance's next call).
    pub fn set_max(&mut self, max: u32) {
        self.max = max;
    }

    /// The files the guest holds, shared (for the disk measurement).
    pub fn held(&self) -> &HeldFiles {
        &self.held
    }
}

/// Wraps `open-at` in `linker`, which must already hold wasmtime-wasi's
/// `wasi:filesystem`.
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
                if files.held.alive() >= files.max as usize {
                    return Err(too_many(files.max));
                }
                let state = store.data_mut();
                let opened =
                    HostDescriptor::open_at(&mut state.filesystem(), dir, path_flags, path, open_flags, flags).await;
                match opened {
                    Ok(file) => {
                        match state.table.get(&file)? {
                            Opened::File(f) => state.files.held.add(&f.file),
                            Opened::Dir(d) => state.files.held.add(&d.dir),
                        }
                        Ok((Ok::<_, ErrorCode>(file),))
                    }
                    Err(error) => Ok((Err(error.downcast()?),)),
                }
            })
        },
    )?;
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
