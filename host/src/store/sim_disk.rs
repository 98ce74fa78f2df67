//! A simulated disk for proving durability. Its files remember which writes
//! a completed sync covers, so a test can cut the power at any point and get
//! the disk as a restart would find it: every write no sync covered is
//! dropped ([`Loss::Dropped`]) or kept sector by sector at random
//! ([`Loss::Torn`]). It can also fail the n-th write or sync of a file with
//! an I/O error or a full disk, and record every operation ([`SimDisk::recording`])
//! so that [`CutPoints`] can rebuild the disk as it was after any of them.
//!
//! The store runs on it unchanged: [`SimFile`] is redb's storage backend and
//! the write-ahead log's file. Creating a file is taken to be durable (the
//! real log syncs its directory when it creates the file).

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};

/// Writes reach the disk in whole sectors of this many bytes; a torn write
/// keeps some of its sectors and loses others.
pub const SECTOR: u64 = 512;

/// What happens to writes that no completed sync covered when the power goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// They are all lost.
    Dropped,
    /// Each of their sectors (and each length change) survives or not, at random.
    Torn,
}

/// Which operation a [`Fault`] fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOn {
    /// A write.
    Write,
    /// A sync.
    Sync,
}

/// An injected failure: the `nth` (from 1) write or sync of `file` fails.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The file's name on the disk.
    pub file: String,
    /// Which kind of operation.
    pub on: FaultOn,
    /// Which one, counting from 1.
    pub nth: u64,
    /// `true`: the disk is full (ENOSPC); `false`: an I/O error (EIO).
    pub no_space: bool,
}

#[derive(Debug, Clone)]
enum FileOp {
    Write {
        offset: u64,
        data: Arc<[u8]>,
    },
    SetLen(u64),
    Sync,
    /// The file takes the place of another (the other name is the trace's);
    /// durable at once, as a rename followed by a sync of its directory is.
    RenameTo(String),
}

#[derive(Debug, Clone, Default)]
struct FileState {
    current: Vec<u8>,
    durable: Vec<u8>,
    unsynced: Vec<FileOp>,
    writes: u64,
    syncs: u64,
}

impl FileState {
    fn apply(&mut self, op: &FileOp) {
        match op {
            FileOp::Sync => {
                self.durable.clone_from(&self.current);
                self.unsynced.clear();
            }
            other => {
                apply(&mut self.current, other);
                self.unsynced.push(other.clone());
            }
        }
    }

    /// The file as found after a power cut.
    fn after_loss(&self, loss: Loss, rng: &mut SplitMix) -> Vec<u8> {
        let mut bytes = self.durable.clone();
        if loss == Loss::Torn {
            for op in &self.unsynced {
                match op {
                    FileOp::Write { offset, data } => {
                        let end = offset + data.len() as u64;
                        let mut at = *offset;
                        while at < end {
                            let sector_end = ((at / SECTOR) + 1) * SECTOR;
                            let next = sector_end.min(end);
                            if rng.coin() {
                                let part = &data[(at - offset) as usize..(next - offset) as usize];
                                apply(&mut bytes, &FileOp::Write { offset: at, data: Arc::from(part) });
                            }
                            at = next;
                        }
                    }
                    op => {
                        if rng.coin() {
                            apply(&mut bytes, op);
                        }
                    }
                }
            }
        }
        bytes
    }
}

fn apply(bytes: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::Write { offset, data } => {
            let (start, end) = (*offset as usize, *offset as usize + data.len());
            if bytes.len() < end {
                bytes.resize(end, 0);
            }
            bytes[start..end].copy_from_slice(data);
        }
        FileOp::SetLen(len) => bytes.resize(*len as usize, 0),
        FileOp::Sync | FileOp::RenameTo(_) => {}
    }
}

/// A small seeded generator (SplitMix64): the same seed gives the same tears.
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Self {
        SplitMix(seed)
    }

    /// The next number.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

#[derive(Debug, Default)]
struct DiskState {
    files: BTreeMap<String, FileState>,
    /// Operations done so far (writes, length changes, syncs; not reads).
    ops: u64,
    /// The power goes off once this many operations are done: every later one fails.
    power_off_at: Option<u64>,
    /// Every operation done, when recording.
    trace: Option<Vec<(String, FileOp)>>,
    faults: Vec<Fault>,
}

/// A disk of named files held in memory. See the module documentation.
#[derive(Debug, Default)]
pub struct SimDisk {
    state: Mutex<DiskState>,
}

impl SimDisk {
    /// An empty disk.
    pub fn new() -> Arc<Self> {
        Arc::new(SimDisk::default())
    }

    /// An empty disk that records every operation, for [`CutPoints`].
    pub fn recording() -> Arc<Self> {
        let disk = SimDisk::default();
        disk.lock().trace = Some(Vec::new());
        Arc::new(disk)
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Operations done so far (writes, length changes and syncs).
    pub fn ops(&self) -> u64 {
        self.lock().ops
    }

    /// Fails one later write or sync.
    pub fn inject(&self, fault: Fault) {
        self.lock().faults.push(fault);
    }

    /// Cuts the power once `ops` operations are done in all: every later
    /// write, length change or sync fails with an I/O error.
    pub fn power_off_after(&self, ops: u64) {
        self.lock().power_off_at = Some(ops);
    }

    /// The disk as a restart finds it after the power went off now.
    pub fn after_power_loss(&self, loss: Loss, seed: u64) -> Arc<SimDisk> {
        let state = self.lock();
        let mut rng = SplitMix::new(seed);
        disk_of(state.files.iter().map(|(name, file)| (name.clone(), file.after_loss(loss, &mut rng))))
    }

    /// Every operation recorded so far (see [`SimDisk::recording`]).
    pub fn take_trace(&self) -> Trace {
        Trace(self.lock().trace.take().unwrap_or_default())
    }

    /// The current (page cache) contents of a file, if it exists.
    pub fn contents(&self, name: &str) -> Option<Vec<u8>> {
        self.lock().files.get(name).map(|f| f.current.clone())
    }

    /// Replaces a file's contents, durably (to damage a file on purpose).
    pub fn put(&self, name: &str, bytes: Vec<u8>) {
        let mut state = self.lock();
        let file = state.files.entry(name.to_owned()).or_default();
        file.current.clone_from(&bytes);
        file.durable = bytes;
        file.unsynced.clear();
    }

    /// Syncs of the file `name` so far (to aim a [`Fault`] at a later one).
    pub fn syncs(&self, name: &str) -> u64 {
        self.lock().files.get(name).map_or(0, |f| f.syncs)
    }

    /// Whether the file `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.lock().files.contains_key(name)
    }

    /// Renames `from` to `to` (replacing it), durably.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        self.operate(from, FileOp::RenameTo(to.to_owned()))
    }

    /// A handle on the file `name`, created empty if it does not exist.
    pub fn file(self: &Arc<Self>, name: &str) -> SimFile {
        self.lock().files.entry(name.to_owned()).or_default();
        SimFile { disk: self.clone(), name: name.to_owned() }
    }

    fn operate(&self, name: &str, op: FileOp) -> io::Result<()> {
        let mut state = self.lock();
        if state.power_off_at.is_some_and(|at| state.ops >= at) {
            return Err(io::Error::other("simulated power loss: the disk is gone"));
        }
        let file = state.files.entry(name.to_owned()).or_default();
        let (on, count) = match op {
            FileOp::Sync => {
                file.syncs += 1;
                (FaultOn::Sync, file.syncs)
            }
            FileOp::Write { .. } => {
                file.writes += 1;
                (FaultOn::Write, file.writes)
            }
            FileOp::SetLen(_) | FileOp::RenameTo(_) => (FaultOn::Write, 0),
        };
        if let Some(fault) = state.faults.iter().find(|f| f.file == name && f.on == on && f.nth == count) {
            return Err(io::Error::from_raw_os_error(if fault.no_space { 28 } else { 5 }));
        }
        let file = state.files.get_mut(name).expect("created above");
        if let FileOp::RenameTo(to) = &op {
            let moved = state.files.remove(name).expect("created above");
            state.files.insert(to.clone(), moved);
        } else {
            file.apply(&op);
        }
        state.ops += 1;
        if let Some(trace) = &mut state.trace {
            trace.push((name.to_owned(), op));
        }
        Ok(())
    }
}

fn disk_of(files: impl Iterator<Item = (String, Vec<u8>)>) -> Arc<SimDisk> {
    let disk = SimDisk::new();
    for (name, bytes) in files {
        disk.put(&name, bytes);
    }
    disk
}

/// One file of a [`SimDisk`].
#[derive(Debug, Clone)]
pub struct SimFile {
    disk: Arc<SimDisk>,
    name: String,
}

impl SimFile {
    /// The file's name on its disk.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn len(&self) -> u64 {
        self.disk.lock().files.get(&self.name).map_or(0, |f| f.current.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let state = self.disk.lock();
        let bytes = state.files.get(&self.name).map(|f| f.current.as_slice()).unwrap_or_default();
        let slice = bytes
            .get(offset as usize..offset as usize + out.len())
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of a simulated file"))?;
        out.copy_from_slice(slice);
        Ok(())
    }

    /// The whole file.
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        Ok(self.disk.lock().files.get(&self.name).map(|f| f.current.clone()).unwrap_or_default())
    }

    /// Writes `data` at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        self.disk.operate(&self.name, FileOp::Write { offset, data: Arc::from(data) })
    }

    /// Sets the length.
    pub fn set_len(&self, len: u64) -> io::Result<()> {
        self.disk.operate(&self.name, FileOp::SetLen(len))
    }

    /// Makes every write so far durable.
    pub fn sync(&self) -> io::Result<()> {
        self.disk.operate(&self.name, FileOp::Sync)
    }
}

impl redb::StorageBackend for SimFile {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(SimFile::len(self))
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        SimFile::read(self, offset, out)
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        SimFile::set_len(self, len)
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.sync()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        self.write_at(offset, data)
    }
}

/// The operations a recording [`SimDisk`] saw, in order.
#[derive(Debug, Default)]
pub struct Trace(Vec<(String, FileOp)>);

impl Trace {
    /// How many operations; a cut can come after any number of them, `0..=len`.
    pub fn len(&self) -> u64 {
        self.0.len() as u64
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many times the file `name` was cut to nothing.
    pub fn emptied(&self, name: &str) -> usize {
        self.0.iter().filter(|(file, op)| file == name && matches!(op, FileOp::SetLen(0))).count()
    }

    /// Indexes (operation counts) right after each sync: the points where
    /// something new became durable.
    pub fn syncs(&self) -> Vec<u64> {
        self.0.iter().enumerate().filter(|(_, (_, op))| matches!(op, FileOp::Sync)).map(|(i, _)| i as u64 + 1).collect()
    }
}

/// Walks a [`Trace`] forward and rebuilds the disk as a restart would find
/// it had the power gone off after any number of its operations.
pub struct CutPoints<'t> {
    trace: &'t Trace,
    done: u64,
    files: BTreeMap<String, FileState>,
}

impl<'t> CutPoints<'t> {
    /// Starts before the first operation of `trace`.
    pub fn new(trace: &'t Trace) -> Self {
        CutPoints { trace, done: 0, files: BTreeMap::new() }
    }

    /// The disk after a power cut once `ops` operations were done. Cuts must
    /// be asked for in order (`ops` never decreasing).
    pub fn disk_at(&mut self, ops: u64, loss: Loss, seed: u64) -> Arc<SimDisk> {
        assert!(ops >= self.done, "cut points are visited in order");
        while self.done < ops.min(self.trace.len()) {
            let (name, op) = &self.trace.0[self.done as usize];
            match op {
                FileOp::RenameTo(to) => {
                    let moved = self.files.remove(name).unwrap_or_default();
                    self.files.insert(to.clone(), moved);
                }
                op => self.files.entry(name.clone()).or_default().apply(op),
            }
            self.done += 1;
        }
        let mut rng = SplitMix::new(seed);
        disk_of(self.files.iter().map(|(name, file)| (name.clone(), file.after_loss(loss, &mut rng))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_synced_writes_survive_a_dropped_cut_and_torn_ones_keep_whole_sectors() {
        let disk = SimDisk::recording();
        let f = disk.file("f");
        f.write_at(0, &[1; 1024]).unwrap();
        f.sync().unwrap();
        f.write_at(1024, &[2; 2048]).unwrap();
        assert_eq!(disk.after_power_loss(Loss::Dropped, 1).contents("f").unwrap(), vec![1; 1024]);
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let torn = disk.after_power_loss(Loss::Torn, seed).contents("f").unwrap();
            assert_eq!(&torn[..1024], &[1; 1024][..], "synced bytes never change");
            for sector in torn[1024..].chunks(SECTOR as usize) {
                assert!(sector.iter().all(|b| *b == 2) || sector.iter().all(|b| *b == 0), "sectors are atomic");
            }
            seen.insert(torn.len());
        }
        assert!(seen.len() > 1, "tears differ by seed: {seen:?}");

        let trace = disk.take_trace();
        assert_eq!((trace.len(), trace.syncs()), (3, vec![2]));
        let mut cuts = CutPoints::new(&trace);
        assert!(cuts.disk_at(1, Loss::Dropped, 0).contents("f").unwrap().is_empty());
        assert_eq!(cuts.disk_at(2, Loss::Dropped, 0).contents("f").unwrap(), vec![1; 1024]);
        assert_eq!(cuts.disk_at(3, Loss::Torn, 0).contents("f").unwrap()[..1024], [1; 1024]);
    }

    #[test]
    fn faults_fail_the_chosen_operation_and_a_cut_fails_everything_after_it() {
        let disk = SimDisk::new();
        let f = disk.file("log");
        disk.inject(Fault { file: "log".into(), on: FaultOn::Sync, nth: 2, no_space: false });
        disk.inject(Fault { file: "log".into(), on: FaultOn::Write, nth: 3, no_space: true });
        f.write_at(0, b"a").unwrap();
        f.sync().unwrap();
        f.write_at(1, b"b").unwrap();
        assert_eq!(f.sync().unwrap_err().raw_os_error(), Some(5));
        assert_eq!(f.write_at(2, b"c").unwrap_err().raw_os_error(), Some(28));
        assert_eq!(disk.after_power_loss(Loss::Dropped, 0).contents("log").unwrap(), b"a");
        disk.power_off_after(disk.ops());
        assert!(f.write_at(2, b"c").is_err() && f.sync().is_err());
    }
}
