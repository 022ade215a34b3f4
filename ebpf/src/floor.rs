//! The floor of an sk_msg hop (`src/bpf/floor.bpf.c`): a bare redirect between socket pairs,
//! with none of SPROXY's work, so the data-plane benchmark can put each hop next to what the
//! kernel's sk_msg path alone costs on the same machine.

use aya::maps::{HashMap, MapData, SockHash};
use aya::programs::SkMsg;
use aya::Ebpf;
use std::net::TcpStream;
use std::os::fd::AsRawFd;

static FLOOR_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/floor.bpf.o"));

#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("loading the sk_msg floor program: {0} (loading BPF needs root)")]
    Load(#[from] aya::EbpfError),
    #[error("sk_msg floor program: {0}")]
    Program(#[from] aya::programs::ProgramError),
    #[error("sk_msg floor map {map}: {source}")]
    Map {
        map: &'static str,
        source: aya::maps::MapError,
    },
    #[error("the floor object has no {0}")]
    Missing(&'static str),
    #[error("socket address: {0}")]
    Address(#[from] std::io::Error),
}

/// The loaded floor program and its maps; dropping it detaches the program.
pub struct Floor {
    socks: SockHash<MapData, u32>,
    peer: HashMap<MapData, u32, u32>,
    // Keeps the program attached; dropped last.
    _ebpf: Ebpf,
}

impl Floor {
    pub fn load() -> Result<Floor, FloorError> {
        let mut ebpf = Ebpf::load(FLOOR_OBJECT)?;
        let mut take = |map: &'static str| ebpf.take_map(map).ok_or(FloorError::Missing(map));
        let socks = take("socks")?;
        let peer = take("peer")?;
        let socks = SockHash::try_from(socks).map_err(|source| FloorError::Map {
            map: "socks",
            source,
        })?;
        let peer = HashMap::try_from(peer).map_err(|source| FloorError::Map {
            map: "peer",
            source,
        })?;
        let program: &mut SkMsg = ebpf
            .program_mut("floor_redirect")
            .ok_or(FloorError::Missing("program floor_redirect"))?
            .try_into()?;
        program.load()?;
        program.attach(socks.fd())?;
        Ok(Floor {
            socks,
            peer,
            _ebpf: ebpf,
        })
    }

    /// From now on, what is sent on `a` arrives in `b`'s receive queue and what is sent on `b`
    /// in `a`'s (their TCP peers see nothing).
    pub fn pair(&mut self, a: &TcpStream, b: &TcpStream) -> Result<(), FloorError> {
        let (pa, pb) = (a.local_addr()?.port() as u32, b.local_addr()?.port() as u32);
        let map_err = |map| move |source| FloorError::Map { map, source };
        self.peer.insert(pa, pb, 0).map_err(map_err("peer"))?;
        self.peer.insert(pb, pa, 0).map_err(map_err("peer"))?;
        self.socks
            .insert(pa, a.as_raw_fd(), 0)
            .map_err(map_err("socks"))?;
        self.socks
            .insert(pb, b.as_raw_fd(), 0)
            .map_err(map_err("socks"))?;
        Ok(())
    }
}
