//! The operator's commands, as the engine carries them out.

use super::engine::Engine;
use super::{Command, ControllerError, FinalState, RollbackTarget};
use crate::fleet::Fleet;
use crate::plan::{plan_nodes, Plan};
use crate::settings::ApplyOptions;
use crate::state::{now_rfc3339, NodePhase, Run, RunPhase};
use crate::store::Store;

impl<F: Fleet, S: Store> Engine<F, S> {
    pub(super) async fn command(&mut self, cmd: Command) {
        if !self.leading {
            let refuse = || ControllerError::NotLeader(self.leader.clone());
            match cmd {
                Command::Plan(o, r) => {
                    let _ = r.send(Ok(self.plan(&o)));
                }
                Command::Status(r) => {
                    let _ = r.send(Ok(self.status()));
                }
                Command::Apply(_, r) => {
                    let _ = r.send(Err(refuse()));
                }
                Command::Pause(r) | Command::Resume(r) => {
                    let _ = r.send(Err(refuse()));
                }
                Command::Rollback(_, r) => {
                    let _ = r.send(Err(refuse()));
                }
                Command::Finalize(r) => {
                    let _ = r.send(Err(refuse()));
                }
            }
            return;
        }
        match cmd {
            Command::Plan(o, r) => {
                let _ = r.send(Ok(self.plan(&o)));
            }
            Command::Apply(o, r) => {
                let _ = r.send(self.apply(o).await);
            }
            Command::Pause(r) => {
                let _ = r.send(self.pause().await);
            }
            Command::Resume(r) => {
                let _ = r.send(self.resume().await);
            }
            Command::Rollback(t, r) => {
                let _ = r.send(self.rollback(t).await);
            }
            Command::Finalize(r) => {
                let _ = r.send(self.finalize().await);
            }
            Command::Status(r) => {
                let _ = r.send(Ok(self.status()));
            }
        }
    }

    fn plan(&self, o: &ApplyOptions) -> Plan {
        let settings = self.base.with(o);
        plan_nodes(
            &self.fleet.nodes(),
            &settings,
            o.nodes.as_deref(),
            &self.state,
        )
    }

    async fn apply(&mut self, options: ApplyOptions) -> Result<Plan, ControllerError> {
        if self.state.phase == RunPhase::Running {
            return Err(ControllerError::Busy(RunPhase::Running));
        }
        if let Some((n, r)) = self
            .state
            .nodes
            .iter()
            .find(|(_, r)| r.phase == NodePhase::Shadow)
        {
            return Err(ControllerError::NodeInFlight {
                node: n.clone(),
                phase: r.phase,
            });
        }
        let plan = self.plan(&options);
        if plan.batches.is_empty() {
            return Err(ControllerError::NothingReady(Box::new(plan)));
        }
        let run = Run {
            settings: self.base.with(&options),
            options,
            batches: plan.batches.clone(),
            current_batch: 0,
            started: Default::default(),
            started_at: now_rfc3339(),
        };
        let ok = self
            .forward(|s| {
                for n in plan.nodes() {
                    s.nodes.entry(n.clone()).or_default();
                }
                s.run = Some(run);
                s.phase = RunPhase::Running;
                s.pause_reason = None;
                s.finalized_at = None;
                Ok(())
            })
            .await;
        if !ok {
            return Err(self.store_failure());
        }
        Ok(plan)
    }

    fn store_failure(&self) -> ControllerError {
        ControllerError::Store(crate::store::StoreError::Io {
            path: self.store.describe().into(),
            op: "save the migration state",
            source: std::io::Error::other(self.last_error.clone().unwrap_or_default()),
        })
    }

    async fn set_phase(
        &mut self,
        from: RunPhase,
        to: RunPhase,
        what: &'static str,
        why: Option<String>,
    ) -> Result<(), ControllerError> {
        if self.state.phase == to {
            return Ok(());
        }
        if self.state.phase != from {
            return Err(ControllerError::WrongPhase {
                phase: self.state.phase,
                what,
                needs: from,
            });
        }
        if !self
            .forward(|s| {
                s.phase = to;
                s.pause_reason = why;
                Ok(())
            })
            .await
        {
            return Err(self.store_failure());
        }
        Ok(())
    }

    async fn pause(&mut self) -> Result<(), ControllerError> {
        let why = Some("paused by the operator; `sshbridge migrate resume` continues".into());
        self.set_phase(RunPhase::Running, RunPhase::Paused, "pause", why)
            .await?;
        self.stop_shadows();
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), ControllerError> {
        self.set_phase(RunPhase::Paused, RunPhase::Running, "resume", None)
            .await
    }

    async fn rollback(&mut self, target: RollbackTarget) -> Result<Vec<String>, ControllerError> {
        let movable = |p: NodePhase| p.can_go_to(NodePhase::RolledBack);
        let (nodes, run) = match target {
            RollbackTarget::All => {
                let nodes: Vec<_> = self
                    .state
                    .nodes
                    .iter()
                    .filter(|(_, r)| movable(r.phase))
                    .map(|(n, _)| n.clone())
                    .collect();
                let run = self.state.run.is_some().then(|| {
                    (
                        RunPhase::Aborted,
                        "every node rolled back by the operator".to_owned(),
                    )
                });
                (nodes, run)
            }
            RollbackTarget::Nodes(list) => {
                let known = self.fleet.nodes();
                if let Some(n) = list.iter().find(|n| {
                    !self.state.nodes.contains_key(*n) && !known.iter().any(|v| &v.name == *n)
                }) {
                    return Err(ControllerError::UnknownNode(n.clone()));
                }
                let nodes: Vec<_> = list
                    .into_iter()
                    .filter(|n| movable(self.state.phase_of(n)))
                    .collect();
                let run = (self.state.phase == RunPhase::Running && !nodes.is_empty()).then(|| {
                    let why = format!(
                        "{} rolled back by the operator; `sshbridge migrate resume` continues",
                        nodes.join(", ")
                    );
                    (RunPhase::Paused, why)
                });
                (nodes, run)
            }
        };
        let why = "rolled back by the operator".to_owned();
        let pairs: Vec<_> = nodes.iter().map(|n| (n.clone(), why.clone())).collect();
        if !self.roll_back(&pairs, run).await {
            return Err(self.store_failure());
        }
        Ok(nodes)
    }

    async fn finalize(&mut self) -> Result<FinalState, ControllerError> {
        let mut names: Vec<String> = self.fleet.nodes().into_iter().map(|v| v.name).collect();
        for n in self.state.nodes.keys() {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
        let not_done: Vec<_> = names
            .iter()
            .map(|n| (n.clone(), self.state.phase_of(n)))
            .filter(|(_, p)| *p != NodePhase::Done)
            .collect();
        if !not_done.is_empty() || names.is_empty() {
            return Err(ControllerError::NotDone(not_done));
        }
        let at = now_rfc3339();
        if !self
            .forward(|s| {
                s.finalized_at = Some(at.clone());
                Ok(())
            })
            .await
        {
            return Err(self.store_failure());
        }
        Ok(FinalState {
            nodes: names,
            finalized_at: at,
        })
    }
}
