//! What the migration thread needs of a running guest, whichever kind it
//! is: the simulated guest ([`crate::guest::Guest`]) or a real KVM VM
//! (`crate::kvm::KvmGuest`).

use crate::bitmap::PageBitmap;
use crate::engines::GuestThrottle;
use crate::guest::Guest;

/// A running source guest.
pub trait RunningGuest {
    /// Starts dirty logging (QEMU's `log_start`): from now on every written
    /// page is reported. The caller treats every page as dirty.
    fn start_logging(&mut self) -> Result<(), String>;
    /// QEMU's `migration_bitmap_sync`: harvests the dirty log into `bmap`;
    /// returns the pages newly set in it.
    fn sync_into(&mut self, bmap: &mut PageBitmap) -> Result<u64, String>;
    /// Ring mode (`--dirty-tracking ring`): harvests the dirty log into the
    /// dirty-page scheduler the guest was built with, now.
    fn reap(&mut self) -> Result<(), String> {
        Err("this guest has no dirty-page scheduler (--dirty-tracking ring)".into())
    }
    /// The auto-converge throttle the vCPUs obey.
    fn throttle(&self) -> &dyn GuestThrottle;
    /// vm_stop: stops every vCPU and the reaper, and waits for them.
    fn stop(&mut self);
    /// The vCPU state the destination needs to resume (empty: none, the
    /// simulated guest's vCPUs are threads without state).
    fn device_state(&mut self) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }
}

impl RunningGuest for Guest {
    fn start_logging(&mut self) -> Result<(), String> {
        self.shared.log.start();
        Ok(())
    }
    fn sync_into(&mut self, bmap: &mut PageBitmap) -> Result<u64, String> {
        Ok(self.shared.log.sync_into(bmap))
    }
    fn reap(&mut self) -> Result<(), String> {
        self.shared.log.reap();
        Ok(())
    }
    fn throttle(&self) -> &dyn GuestThrottle {
        &*self.shared.throttle
    }
    fn stop(&mut self) {
        self.stop_vcpus();
        self.stop_reaper();
    }
}
