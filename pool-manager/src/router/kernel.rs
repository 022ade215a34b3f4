//! Kernel routing: SPROXY does the work; the pool-manager only maintains its maps.

use spright_core::pool::PoolLayout;
use spright_core::Chain;
use spright_ebpf::{PoolGeometry, Sproxy, SproxyError};
use std::path::Path;

pub struct KernelRouter {
    pub sproxy: Sproxy,
}

impl KernelRouter {
    /// Loads SPROXY (pinning its maps under `pins` if given) and installs the chain's allow list.
    pub fn load(
        chain: &Chain,
        pool: &PoolLayout,
        pins: Option<&Path>,
    ) -> Result<KernelRouter, SproxyError> {
        if let Some(dir) = pins {
            // Left over by a pool-manager that was killed: it no longer routes anything.
            Sproxy::remove_pins(dir);
        }
        let geometry = PoolGeometry {
            data_start: pool.data_start,
            buffer_size: pool.buffer_size,
            buffer_count: pool.buffer_count,
        };
        let mut sproxy = Sproxy::load(pins, Some(geometry), chain.pool.queue_limit)?;
        sproxy.set_allow_list(chain.allow_list())?;
        sproxy.set_functions(
            std::iter::once(spright_core::ids::GATEWAY.0)
                .chain(chain.functions.iter().map(|f| f.id)),
        )?;
        Ok(KernelRouter { sproxy })
    }
}
