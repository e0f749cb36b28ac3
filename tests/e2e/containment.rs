//! Calls that misbehave are stopped by the engine and reported with the right reason; the next
//! call on the same version starts clean.

use std::time::Duration;

use relish_host::runtime::{Budget, CallError, Runtime, RuntimeConfig};
use relish_tests::{budget, decode, guest, guest_bytes, policy_bytes, synthetic};

fn request() -> relish_host::runtime::types::Request {
    decode(&synthetic::venues(30, 5, false).to_string())
}

fn failure(name: &str, budget: &Budget) -> CallError {
    guest(name).rank(&request(), budget).expect_err("the call must fail")
}

#[test]
fn each_misbehaviour_is_stopped_with_its_reason() {
    let short = Budget { deadline: Duration::from_millis(200), ..budget() };
    for (name, reason) in [
        ("infinite-loop", "timeout"),
        ("memory-growth", "memory"),
        ("huge-alloc", "memory"),
        ("deep-recursion", "trap"),
        ("panic", "trap"),
        ("log-spam", "log-limit"),
        ("declines", "error"),
        ("nan-score", "invalid-output"),
    ] {
        // Only the loop needs a short deadline; the rest fail on their own, on any machine.
        let limits = if name == "infinite-loop" { short.clone() } else { budget() };
        let error = failure(name, &limits);
        assert_eq!(error.reason(), reason, "{name}: {error}");
    }
}

#[test]
fn the_memory_cap_is_the_surface_budget_not_the_engine_ceiling() {
    // 24 MiB of allocations: past a 16 MiB budget, well within a 64 MiB one (and the engine's
    // 256 MiB ceiling either way).
    let mut request = request();
    request.params = [("stop_after_mb", "24")].into_iter().collect();
    let hog = guest("memory-growth");
    let small = Budget { memory_bytes: 16 << 20, ..budget() };
    let error = hog.rank(&request, &small).unwrap_err();
    assert!(matches!(error, CallError::Memory { cap, .. } if cap == 16 << 20), "{error}");
    let large = Budget { memory_bytes: 64 << 20, ..budget() };
    assert!(hog.rank(&request, &large).is_ok(), "the same call fits a larger budget");
}

#[test]
fn a_deep_recursion_is_a_trap_that_names_the_function() {
    let error = failure("deep-recursion", &budget());
    let message = error.to_string();
    assert!(message.contains("descend"), "{message}");
}

#[test]
fn a_failed_call_leaves_nothing_behind_for_the_next_one() {
    // The same loaded version, a trap then a normal call: a fresh instance each time.
    let tagger = guest("tagger-v1");
    let looping = guest("infinite-loop");
    let short = Budget { deadline: Duration::from_millis(50), ..budget() };
    for _ in 0..3 {
        // Stopped by the deadline: `preempted` when a busy machine gave the thread less CPU time
        // than the deadline meanwhile.
        let stopped = looping.rank(&request(), &short).unwrap_err();
        assert!(matches!(stopped.reason(), "timeout" | "preempted"), "{stopped}");
        assert_eq!(tagger.rank(&request(), &budget()).unwrap().len(), 30);
    }
}

#[test]
fn a_fuel_budget_stops_a_loop_deterministically_and_lets_normal_calls_through() {
    let runtime = Runtime::new(RuntimeConfig { fuel: true, ..RuntimeConfig::default() }).unwrap();
    let looping = runtime.load(&guest_bytes("infinite-loop")).unwrap();
    let discovery = runtime.load(&policy_bytes("discovery")).unwrap();
    // A deadline far away: only fuel can stop the loop.
    let budget = Budget { fuel: Some(5_000_000), deadline: Duration::from_secs(60), ..budget() };
    let error = looping.rank(&request(), &budget).unwrap_err();
    assert!(matches!(error, CallError::OutOfFuel(5_000_000)), "{error}");
    assert_eq!(error.reason(), "timeout");
    assert!(error.to_string().contains("fuel budget of 5000000"), "{error}");
    assert_eq!(discovery.rank(&request(), &budget).unwrap().len(), 30);
    // Too little fuel for the real policy fails the same way on every run.
    let starved = Budget { fuel: Some(1_000), ..budget };
    for _ in 0..3 {
        assert!(matches!(discovery.rank(&request(), &starved), Err(CallError::OutOfFuel(1_000))));
    }
}

/// Runs `work` on a thread that gets almost no CPU: under `SCHED_IDLE`, pinned to one CPU with
/// two busy threads of normal priority (what a saturated host does to a call, made certain).
fn starved<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let allowed = rustix::thread::sched_getaffinity(None).expect("the thread's CPUs");
    let cpu = (0..rustix::thread::CpuSet::MAX_CPU).find(|&c| allowed.is_set(c)).expect("a CPU");
    let pin = move || {
        let mut one = rustix::thread::CpuSet::new();
        one.set(cpu);
        rustix::thread::sched_setaffinity(None, &one).expect("pinning a thread");
    };
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                pin();
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let result = std::thread::spawn(move || {
        pin();
        use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
        let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
        thread_priority::set_thread_priority_and_policy(thread_priority::thread_native_id(), ThreadPriority::Min, idle)
            .expect("SCHED_IDLE");
        work()
    })
    .join()
    .expect("the starved thread");
    stop.store(true, Ordering::Relaxed);
    for hog in hogs {
        hog.join().unwrap();
    }
    result
}

#[test]
fn a_call_starved_of_cpu_is_preempted_not_timed_out_and_never_the_policys_fault() {
    let budget =
        Budget { deadline: Duration::from_millis(20), preemption_grace: Some(Duration::from_millis(30)), ..budget() };
    // On a thread that gets its CPU, a loop uses up its deadline: the policy's fault.
    let error = failure("infinite-loop", &budget);
    assert!(matches!(error, CallError::Timeout(_)), "{error}");
    assert!(error.is_policy_fault());
    // Starved of CPU, the same loop reaches the wall-clock limit first: the host's fault.
    let looping = guest("infinite-loop");
    let starving = budget.clone();
    let error = starved(move || looping.rank(&request(), &starving)).expect_err("stopped");
    let CallError::Preempted { cpu, wall } = &error else { panic!("not preempted: {error}") };
    assert!(*cpu < Duration::from_millis(20) && *wall >= Duration::from_millis(50), "cpu {cpu:?}, wall {wall:?}");
    assert_eq!(error.reason(), "preempted");
    assert!(!error.is_policy_fault());
    assert!(error.to_string().contains("preempted"), "{error}");
    // A normal policy starved the same way but with a long enough grace still answers.
    let patient =
        Budget { deadline: Duration::from_millis(20), preemption_grace: Some(Duration::from_secs(20)), ..budget };
    let discovery = relish_tests::policy("discovery");
    let answer = starved(move || discovery.rank(&request(), &patient));
    assert!(answer.is_ok(), "{answer:?}");
}

#[test]
fn shadow_calls_take_no_instance_from_the_serving_pool() {
    // One serving slot: while a serving instance holds it, a second serving call fails for
    // capacity, and the version's shadow copy still answers, the same as it does.
    let runtime = Runtime::new(RuntimeConfig { max_instances: 1, ..RuntimeConfig::default() }).unwrap();
    let discovery = runtime.load(&policy_bytes("discovery")).unwrap();
    let shadow = discovery.for_shadows().unwrap();
    assert_eq!((shadow.digest(), shadow.metadata().version.as_str()), (discovery.digest(), "0.1.0"));
    let request = request();
    let served = discovery.rank(&request, &budget()).unwrap();

    let held = discovery.instance(&budget()).unwrap();
    let refused = discovery.rank(&request, &budget()).unwrap_err();
    assert_eq!(refused.reason(), "capacity", "{refused}");
    for _ in 0..3 {
        assert_eq!(shadow.rank(&request, &budget()).unwrap().order(), served.order());
    }
    drop(held);

    // Made once, then shared by every binding of the version.
    assert!(std::sync::Arc::ptr_eq(&shadow, &discovery.for_shadows().unwrap()));
}
