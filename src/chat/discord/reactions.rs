//! Reactions as votes: ✅ approves, ❌ rejects, anything else is not a vote. Who voted comes from
//! the reaction event itself (`user_id`, `member.roles`), never from a cache.

use crate::approval::Vote;
use crate::domain::Actor;
use serenity::all::{Member, Reaction, ReactionType, UserId};
use std::collections::HashMap;

pub const APPROVE: &str = "✅";
pub const REJECT: &str = "❌";

pub fn vote_of(emoji: &ReactionType) -> Option<Vote> {
    match emoji {
        ReactionType::Unicode(s) if s.trim_end_matches('\u{FE0F}') == APPROVE => {
            Some(Vote::Approve)
        }
        ReactionType::Unicode(s) if s.trim_end_matches('\u{FE0F}') == REJECT => Some(Vote::Reject),
        _ => None,
    }
}

/// Discord accounts that belong to one person share one identity, so a person's second account
/// cannot approve their own request.
#[derive(Debug, Clone, Default)]
pub struct Identities {
    person_of: HashMap<u64, u64>,
}

impl Identities {
    pub fn new(groups: &[Vec<u64>]) -> Self {
        let mut person_of = HashMap::new();
        for g in groups {
            if let Some(first) = g.iter().min() {
                for a in g {
                    person_of.insert(*a, *first);
                }
            }
        }
        Self { person_of }
    }

    /// The approval module compares `Actor::id`: the same for every linked account.
    pub fn actor(&self, user: UserId, name: &str) -> Actor {
        let person = self
            .person_of
            .get(&user.get())
            .copied()
            .unwrap_or(user.get());
        Actor::new(person.to_string(), name)
    }
}

/// What people see as a member's name.
pub fn display_name(member: &Member) -> String {
    member
        .nick
        .clone()
        .or_else(|| member.user.global_name.clone())
        .unwrap_or_else(|| member.user.name.clone())
}

pub fn role_ids(member: &Member) -> Vec<String> {
    member.roles.iter().map(|r| r.get().to_string()).collect()
}

/// One reaction's voter.
#[derive(Debug, Clone)]
pub struct Voter {
    pub user: UserId,
    pub actor: Actor,
    pub roles: Vec<String>,
    pub is_bot: bool,
}

/// `None` outside a guild (no member, so no roles to judge by).
pub fn voter(reaction: &Reaction, ids: &Identities) -> Option<Voter> {
    let user = reaction.user_id?;
    let member = reaction.member.as_ref()?;
    Some(Voter {
        user,
        actor: ids.actor(user, &display_name(member)),
        roles: role_ids(member),
        is_bot: member.user.bot,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_check_and_cross_are_votes() {
        assert_eq!(
            vote_of(&ReactionType::Unicode("✅".into())),
            Some(Vote::Approve)
        );
        assert_eq!(
            vote_of(&ReactionType::Unicode("❌".into())),
            Some(Vote::Reject)
        );
        assert_eq!(vote_of(&ReactionType::Unicode("👍".into())), None);
    }

    #[test]
    fn linked_accounts_are_one_person() {
        let ids = Identities::new(&[vec![20, 10]]);
        assert_eq!(ids.actor(UserId::new(20), "a-adm").id, "10");
        assert_eq!(ids.actor(UserId::new(10), "a").id, "10");
        assert_eq!(ids.actor(UserId::new(30), "b").id, "30");
    }
}
