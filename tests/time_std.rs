//! `Instant::from_std`: the runtime's clock reading, as the core counts time.

use std::time::Duration;

#[test]
fn from_std_counts_from_the_epoch_and_saturates_before_it() {
    let epoch = std::time::Instant::now();
    let later = epoch + Duration::from_millis(2500);
    assert_eq!(
        peermsg::Instant::from_std(epoch, later).as_micros(),
        2_500_000
    );
    assert_eq!(
        peermsg::Instant::from_std(later, epoch),
        peermsg::Instant::ZERO
    );
}
