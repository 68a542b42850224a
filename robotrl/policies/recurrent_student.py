"""RAPTOR's student: one tiny recurrent policy that identifies the quadrotor from its own flight.

Exactly Dense 22->16 (ReLU) -> GRU(16) -> Dense 16->4 (linear), 2084 parameters counted as RAPTOR
counts them (ANCHORS §1): the weights, both GRU biases and the 16-value initial hidden state.
"""

from __future__ import annotations

import torch
from torch import nn


class RecurrentStudent(nn.Module):
    def __init__(
        self, obs_dim: int = 22, hidden: int = 16, action_dim: int = 4, learn_initial_state: bool = False
    ):
        """`learn_initial_state`: RAPTOR keeps the initial hidden state at zero (not learned) by default."""
        super().__init__()
        self.input_layer = nn.Linear(obs_dim, hidden)
        self.gru = nn.GRU(hidden, hidden)
        self.output_layer = nn.Linear(hidden, action_dim)
        self.initial_state = nn.Parameter(torch.zeros(1, 1, hidden), requires_grad=learn_initial_state)

    @property
    def hidden_size(self) -> int:
        return self.gru.hidden_size

    def parameter_count(self) -> int:
        """Every value of the policy, the initial hidden state included (learned or not)."""
        return sum(p.numel() for p in self.parameters())

    def initial(self, batch_size: int) -> torch.Tensor:
        """The hidden state [1, B, hidden] an episode starts from."""
        return self.initial_state.expand(1, batch_size, self.hidden_size).contiguous()

    def sequence(
        self, obs: torch.Tensor, hidden: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (unclipped) actions [T, B, 4] for observations [T, B, 22], and the final hidden state."""
        if hidden is None:
            hidden = self.initial(obs.shape[1])
        features, last = self.gru(torch.relu(self.input_layer(obs)), hidden)
        return self.output_layer(features), last

    def forward(self, obs: torch.Tensor, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One control step, the exported signature: (obs [B, 22], hidden [1, B, 16]) -> (actions in
        [-1, 1] [B, 4], next hidden [1, B, 16])."""
        actions, next_hidden = self.sequence(obs.unsqueeze(0), hidden)
        return actions.squeeze(0).clamp(-1.0, 1.0), next_hidden
